"""Chat-template tokenisation of one align row: ids, the answer's loss mask, where the question starts.

Shape letters: T chat tokens (`max_text_len`), A answer positions (`max_answer_len`).
"""

import json

import numpy as np

from uqa_jax.data import answers as answers_lib

MAX_ANSWER_LEN = 64  # A by default: answer + end-of-turn tokens per align row (`input.max_answer_len`)


class ChatTokenizer:
  """Chat-template tokenisation: ids, the answer's loss mask and where the question starts.

  The conversation is the row's messages with the system turn `system_prompt`; with none
  ("") no system turn is rendered at all, although templates such as SmolLM2's and Qwen2.5's
  insert a default one ("You are a helpful AI assistant ...") when the chat has none: it is
  rendered with an empty system turn, which is then cut off (an error if the template does not
  render it as a separate prefix). The loss covers the assistant's answer and the end-of-turn
  token after it (the first special token), nothing of the template after that.
  """

  def __init__(self, tokenizer, max_text_len: int, system_prompt: str = "",
               max_answer_len: int = MAX_ANSWER_LEN):
    self.tokenizer = tokenizer
    self.max_text_len = max_text_len
    self.max_answer_len = max_answer_len
    self.system_prompt = system_prompt
    self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.special_ids = set(tokenizer.all_special_ids)

  def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
    """The chat template's text for `messages`, with this tokenizer's system turn (or none)."""
    system = [{"role": "system", "content": self.system_prompt}]
    text = self.tokenizer.apply_chat_template(system + messages, tokenize=False,
                                              add_generation_prompt=add_generation_prompt)
    if self.system_prompt:
      return text
    head = self.tokenizer.apply_chat_template(system, tokenize=False)
    if not text.startswith(head):
      raise ValueError("the chat template does not render the system turn as a separate prefix; "
                       "set a system prompt (align.system_prompt) for this tokenizer")
    bos = self.tokenizer.bos_token or ""
    opens_with_bos = bos and "bos_token" in (self.tokenizer.chat_template or "") and head.startswith(bos)
    keep = bos if opens_with_bos else ""  # a template that writes BOS first (Llama 3) keeps it
    return keep + text[len(head):]

  def prompt_ids(self, messages: list[dict], where: str = "") -> tuple[list[int], int]:
    """(ids of the prompt up to the assistant's turn, index of the last user turn's first token)."""
    encode = lambda s: self.tokenizer.encode(s, add_special_tokens=False)
    text = self.render(messages, add_generation_prompt=True)
    question = messages[-1]["content"]
    start = text.rfind(question)
    if messages[-1]["role"] != "user" or start < 0:
      raise ValueError(f"{where}: the prompt does not end with a user turn holding the question")
    ids, before = encode(text), encode(text[:start])
    if ids[:len(before)] != before:
      raise ValueError(f"{where}: the question's first token is merged with the template before it; "
                       "cannot place a soft-token placeholder there")
    return ids, len(before)

  def _full_and_end(self, chat: list[dict], prompt: list[int], where: str) -> tuple[list[int], int]:
    """(ids of the whole chat, index of the end-of-turn token after the answer)."""
    full = self.tokenizer.encode(self.render(chat, add_generation_prompt=False), add_special_tokens=False)
    if full[:len(prompt)] != prompt:
      raise ValueError(f"{where}: the chat template's prompt is not a prefix of the full chat; "
                       "cannot place the loss mask")
    end = next((i for i in range(len(prompt), len(full)) if full[i] in self.special_ids), None)
    if end is None:
      raise ValueError(f"{where}: no end-of-turn token after the answer; cannot place the loss mask")
    return full, end

  def answer_ids(self, messages: list[dict], answer: str, prompt: list[int], where: str = "") -> list[int]:
    """The tokens that follow `prompt` (the ids of `messages`) when `answer` is the assistant's
    reply: the answer and its end-of-turn token, exactly as the training loss sees them."""
    full, end = self._full_and_end(messages + [{"role": "assistant", "content": answer}], prompt, where)
    return full[len(prompt):end + 1]

  def fits(self, chat: list[dict], where: str = "") -> bool:
    """Whether the chat (its answer last) fits `max_text_len` and `max_answer_len`."""
    prompt, _ = self.prompt_ids(chat[:-1], where)
    full, end = self._full_and_end(chat, prompt, where)
    return len(full) <= self.max_text_len and end + 1 - len(prompt) <= self.max_answer_len

  def __call__(self, text: str, where: str = "") -> dict:
    chat = json.loads(text)
    answers_lib.check_gold(chat[-1]["content"], where)
    prompt, question_at = self.prompt_ids(chat[:-1], where)
    full, end = self._full_and_end(chat, prompt, where)
    if len(full) > self.max_text_len:
      raise ValueError(f"{where}: chat is {len(full)} tokens, over max_text_len={self.max_text_len}; "
                       "raise `input.max_text_len`")
    if end + 1 - len(prompt) > self.max_answer_len:
      raise ValueError(f"{where}: the answer and its end-of-turn token are {end + 1 - len(prompt)} tokens, "
                       f"over max_answer_len={self.max_answer_len}; raise `input.max_answer_len`")
    n = len(full)
    ids = np.full(self.max_text_len, self.pad_id, np.int32)
    ids[:n] = full
    loss_mask = np.zeros(self.max_text_len, np.int32)
    loss_mask[len(prompt):end + 1] = 1
    answer_at = np.full(self.max_answer_len, -1, np.int32)
    answer_at[:end + 1 - len(prompt)] = np.arange(len(prompt), end + 1)
    attention = np.zeros(self.max_text_len, np.int32)
    attention[:n] = 1
    return {"input_ids": ids, "loss_mask": loss_mask, "attention_mask": attention,
            "question_at": np.int32(question_at), "answer_at": answer_at}
