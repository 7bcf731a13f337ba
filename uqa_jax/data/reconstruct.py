"""Reconstruction rows: a user's history, or a prefix of it, -> its most recent clicks' titles
(categories, brands) written out. Stage 2's reconstruction pre-alignment trains on them
(`align.reconstruct_steps`, `align.reconstruct_every`).

Before the LLM is asked questions about a user, the adapter learns to put into its soft tokens
what the LLM can read back as text, as LLaVA's first stage trains its projector on captions and
RecInterpreter a frozen LLM on the titles a recommender's state encodes.

Each example is an align row cut to a prefix of its history: every column (items, attributes,
text, times) keeps its first `p` steps, `p` drawn between `clicks` and the whole history, so one
row gives as many different targets as it has clicks. The draw (prefix length and which field
is asked) is seeded by the configured seed and the example's place in the stream of examples
(`tag`), so it is the same on any number of processes and after a resume. Stage 2 reads the
align-train file only (our builders split it from align-eval by user).

The answer is the last `n` clicks' texts, newest first, one numbered line each, decoded with
the LLM's tokenizer from the row's own BPE columns (the text the encoder's input holds; an empty
bag is written `(none)`). `n` is `clicks`, fewer when the history is shorter, and fewer again
while the chat does not fit `input.max_text_len` / `input.max_answer_len` (the oldest lines go
first); the question names the `n` it asks for. A click whose text alone does not fit is an
error naming the row. The same rows read from the align-eval file give the reconstruction NLL
a run reports before and after training (`stages/align_reconstruct.py`).
"""

import dataclasses
import json

import grain
import numpy as np

from uqa_jax.config import choices
from uqa_jax.data import arrow_io
from uqa_jax.data import schema

FIELDS = dict(zip(choices.RECONSTRUCT_FIELDS, ("uni_seq_title_bpe_token_ids", "uni_seq_cate_bpe_token_ids",
                                                 "uni_seq_brand_bpe_token_ids")))  # field -> its BPE column
FIELD_NAMES = {"en": {"title": "title", "category": "category", "brand": "brand"},
               "zh": {"title": "标题", "category": "类目", "brand": "品牌"}}
QUESTIONS = {"en": "Write the {field} of each of the user's last {n} clicked items, newest first, one per line.",
             "zh": "按从新到旧的顺序，逐行写出用户最近浏览的{n}个商品的{field}。"}
EMPTY = "(none)"
TASK = -1  # the `task` of a reconstruction row in a batch: no sub-task


@dataclasses.dataclass(frozen=True)
class Task:
  """What a reconstruction example asks: the last `clicks` clicks' texts, of one of `fields`
  (drawn per example)."""
  clicks: int = 3
  fields: tuple[str, ...] = ("title",)

  def __post_init__(self):
    unknown = [f for f in self.fields if f not in FIELDS]
    if unknown or not self.fields or self.clicks < 1:
      raise ValueError(f"reconstruction of {self.clicks} clicks' {tuple(self.fields)}: expected at least one "
                       f"click and fields from {', '.join(FIELDS)}")


def tag(num_rows: int):
  """A `map_with_index` function: row index r at stream position i -> i * num_rows + r (an int,
  so slicing by process and padding with -1 work as for row indices)."""
  return lambda position, row: position * num_rows + row


def cut(row: dict, steps: int) -> dict:
  """The row with every sequence column (and the times) cut to its first `steps` steps."""
  out = dict(row)
  for column in schema.FEATURE_COLUMNS:
    bags = row[column]
    out[column] = arrow_io.Bags(ids=bags.ids[:bags.offsets[steps]], offsets=bags.offsets[:steps + 1])
  if schema.TIME_COLUMN in row:
    out[schema.TIME_COLUMN] = row[schema.TIME_COLUMN][:steps]
  return out


def chat_for(row: dict, field: str, n: int, tokenizer, language: str) -> list[dict]:
  """The question and answer asking for the last `n` clicks' `field`, newest first."""
  bags = row[FIELDS[field]]
  steps = range(bags.num_steps - 1, bags.num_steps - 1 - n, -1)
  lines = [f"{i + 1}. {tokenizer.decode(bags.bag(t).tolist()).strip() or EMPTY}" for i, t in enumerate(steps)]
  question = QUESTIONS[language].format(field=FIELD_NAMES[language][field], n=n)
  return [{"role": "user", "content": question}, {"role": "assistant", "content": "\n".join(lines)}]


class Reconstruct(grain.transforms.Map):
  """A tagged row index (`tag`; -1: padding) -> the row cut to a drawn prefix, its `text` column
  the reconstruction chat; `pipeline.RowToArrays` then makes its arrays (task `TASK`)."""

  def __init__(self, source, chat, *, task: Task, seed: int, language: str):
    self.source, self.chat, self.clicks, self.fields = source, chat, task.clicks, tuple(task.fields)
    self.seed, self.language = seed, language

  def map(self, tagged):
    if tagged < 0:  # padding of the last eval batch
      return dict(self.source[0], _padding=True, _reconstruct=True)
    position, index = divmod(int(tagged), len(self.source))
    row = self.source[index]
    total = row[schema.ITEM_COLUMN].num_steps
    rng = np.random.default_rng((self.seed, position))
    steps = int(rng.integers(min(self.clicks, total), total + 1))
    field = self.fields[int(rng.integers(len(self.fields)))]
    row = cut(row, steps)
    where = f"{self.source.path}, row {index} (reconstruction, first {steps} clicks)"
    for n in range(min(self.clicks, steps), 0, -1):
      chat = chat_for(row, field, n, self.chat.tokenizer, self.language)
      if self.chat.fits(chat, where):
        return {**row, schema.TEXT_COLUMN: json.dumps(chat, ensure_ascii=False), "_reconstruct": True}
    raise ValueError(f"{where}: the newest click's {field} alone does not fit input.max_text_len="
                     f"{self.chat.max_text_len} / input.max_answer_len={self.chat.max_answer_len}; raise them")


def is_reconstruction(batch: int, first: int, every: int) -> bool:
  """Whether batch `batch` (0-based) of a run is a reconstruction batch: the `first` batches,
  then every `every`-th (0: none)."""
  return batch < first or (every > 0 and (batch - first) % every == every - 1)


class Mixed:
  """A run's batches: reconstruction batches where `is_reconstruction` says so, QA batches
  otherwise, each stream read in its own order (`pipeline.Batches` both)."""

  def __init__(self, qa, reconstruction, *, first: int, every: int):
    self.qa, self.reconstruction, self.first, self.every = qa, reconstruction, first, every

  def __iter__(self) -> "MixedIterator":
    return MixedIterator(iter(self.qa), iter(self.reconstruction), self.first, self.every)


class MixedIterator:
  """Iterator of `Mixed`; its state (JSON bytes, as `pipeline.BatchIterator`'s) is the batch count
  and both streams' states, so a resumed run gets the batches an uninterrupted one would."""

  def __init__(self, qa, reconstruction, first: int, every: int):
    self.streams = {"qa": qa, "reconstruction": reconstruction}
    self.first, self.every, self.batches = first, every, 0

  def __iter__(self):
    return self

  def __next__(self):
    stream = "reconstruction" if is_reconstruction(self.batches, self.first, self.every) else "qa"
    batch = next(self.streams[stream])
    self.batches += 1
    return batch

  def get_state(self) -> bytes:
    return json.dumps({"batches": self.batches,
                       **{k: json.loads(it.get_state()) for k, it in self.streams.items()}}).encode()

  def set_state(self, state) -> None:
    state = json.loads(state) if isinstance(state, (bytes, str)) else state
    for k, it in self.streams.items():
      it.set_state(state[k])
    self.batches = int(state["batches"])

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore (the streams read on demand)."""

  def close(self) -> None:
    for it in self.streams.values():
      it.close()
