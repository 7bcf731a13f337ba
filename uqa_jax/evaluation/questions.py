"""The align-eval questions as Stage 3 asks them: prompts, users, soft tokens, text histories.

`load` reads an align file row by row through the training pipeline's own tokenisation
(`pipeline.RowToArrays`), so a question's prompt is exactly the tokens the aligned model saw
before the answer during training. A user is identified by the contents of their history (a
hash of every feature array the encoder reads), not by row: the align files hold one row per
question and no user id. `shuffled_partners` pairs each user with another one (never
themselves); `qa.history_text` writes a user's most recent clicks as text for the text baselines.
"""

import dataclasses
import hashlib
import json

import jax
import numpy as np

from uqa_jax.data import arrow_io
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import qa
from uqa_jax.data import schema
from uqa_jax.llm import tokenizer as tokenizer_lib

CHAT_KEYS = ("input_ids", "loss_mask", "attention_mask", "question_at", "answer_at", "task")


@dataclasses.dataclass
class Question:
  row: int  # in the align file
  user: str  # hash of the history
  task: str
  question: str
  answer: str
  messages: list  # the chat up to the question (what the model is asked)
  prompt: list  # token ids up to the assistant's turn
  question_at: int  # index of the question's first token in `prompt`
  candidates: tuple  # listed in the question (IP, AP), else ()


def _user_key(arrays: dict) -> str:
  digest = hashlib.sha1()
  for key in sorted(arrays):
    if key not in CHAT_KEYS and key != "valid":
      digest.update(key.encode())
      digest.update(np.ascontiguousarray(arrays[key]).tobytes())
  return digest.hexdigest()[:16]


def load(path: str, pipe: pipeline.InputConfig, tokenizer, max_questions: int = 0):
  """-> (questions, {user: history arrays}, language) of the first `max_questions` rows (0: all)."""
  source = pipeline.SequenceSource(path)
  language = source.language
  chat = chat_lib.ChatTokenizer(tokenizer, pipe.max_text_len, pipe.system_prompt, pipe.max_answer_len)
  mapper = pipeline.RowToArrays(pipe, path, chat, language)
  n = len(source) if not max_questions else min(max_questions, len(source))
  questions, histories = [], {}
  for r in range(n):
    row = source[r]
    arrays = mapper.map(row)
    user = _user_key(arrays)
    histories.setdefault(user, {k: v for k, v in arrays.items() if k not in CHAT_KEYS})
    messages = json.loads(row[schema.TEXT_COLUMN])
    start = int(arrays["answer_at"][0])  # the first answer token: the prompt ends before it
    questions.append(Question(
        row=r, user=user, task=schema.TASKS[int(arrays["task"])], question=messages[-2]["content"],
        answer=messages[-1]["content"], messages=messages[:-1], prompt=arrays["input_ids"][:start].tolist(),
        question_at=int(arrays["question_at"]), candidates=qa.parse_candidates(messages[-2]["content"], language)))
  return questions, histories, language


def soft_tokens(model, params, histories: dict, batch_size: int) -> dict:
  """{user: [K, M] float32} soft tokens of each history through the encoder and adapter."""
  fn = jax.jit(lambda p, batch: model.soft_tokens(p, batch))
  users = list(histories)
  out = {}
  for start in range(0, len(users), batch_size):
    chunk = users[start:start + batch_size]
    chunk += [chunk[-1]] * (batch_size - len(chunk))  # one shape: one compilation
    batch = {k: np.stack([histories[u][k] for u in chunk]) for k in histories[chunk[0]]}
    soft = np.asarray(fn(params, batch), np.float32)
    out.update({u: soft[i] for i, u in enumerate(chunk)})
  return out


def shuffled_partners(users: list[str], seed: int) -> dict[str, str]:
  """{user: another user}: one random cycle through all users, so nobody gets their own."""
  users = sorted(set(users))
  if len(users) < 2:
    raise ValueError(f"shuffled_user needs at least 2 users with distinct histories, found {len(users)}")
  order = [users[i] for i in np.random.default_rng(seed).permutation(len(users))]
  return {u: order[(i + 1) % len(order)] for i, u in enumerate(order)}


def check_title_tokenizer(data_dir: str, llm_source: str, log=print) -> None:
  """The title tokens decode to text with the LLM's tokenizer only if the data was written with it."""
  written = arrow_io.read_dataset_info(data_dir).get("tokenizer")
  if written is None:
    log(f"WARNING {data_dir} does not name the tokenizer its text features were written with; the "
        f"history text decodes them with {llm_source}'s")
  elif written != tokenizer_lib.describe(llm_source):
    raise ValueError(f"text prompts: the title tokens in {data_dir} were written with {written!r}, "
                     f"the LLM's tokenizer is {tokenizer_lib.describe(llm_source)!r}")
