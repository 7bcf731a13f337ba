"""grain input pipelines: official Arrow files -> fixed-shape numpy batches.

Shape letters: B batch, L history length (`max_len`), K bag width of a feature, T chat tokens.

A pretrain batch holds
  uni_seq_item_id            [B, L]     int32, 0 = padding
  every other feature column [B, L, K]  int32, bags padded with 0 (K from `bag_sizes`)
  lengths                    [B]        int32, valid steps; valid steps come first
  valid                      [B]        bool, False for rows that pad the last eval batch
  timestamps                 [B, L]     int32 seconds since the row's first kept step, 0 on
                                        padding; only when the file has `uni_seq_timestamp`
An align batch adds
  input_ids, loss_mask, attention_mask  [B, T] int32, right-padded (chat template; the loss
                                         covers the answer and its end-of-turn token only)
  question_at                           [B] int32, index of the question's first token (where
                                         `align.place="placeholder"` splices the soft tokens)
  answer_at                             [B, A] int32, the indices where loss_mask is 1, then -1
                                         (A = `max_answer_len`: the loss needs logits there only)
  task                                  [B] int32, index into `schema.TASKS`
Histories longer than L keep their most recent L steps; bags wider than K keep their first K
ids. Order: shuffle (seeded, reshuffled every epoch), repeat, map, batch. `batch_size` is
global: with P JAX processes each reads B/P rows of every global batch (`batching.ProcessSlice`; the
global batches are those one process would make), so a run gives the same batches on any number
of processes. The iterator's `get_state()` / `set_state()` resume at the same batch.

Two options make align batches cheaper (off by default; `input` block):
  length_window  > 0: after shuffling, each window of this many batches is sorted by chat
                 length (characters, a proxy for tokens) and cut into batches whose order is then
                 shuffled (seeded per window): rows of a batch have similar lengths.
  widths         (text, answer) lengths a batch may be cut to, ascending: each batch's T and A
                 axes are cut to the first pair that holds its longest chat and answer (else
                 `max_text_len`, `max_answer_len`), so a run compiles one train step per pair
                 plus one, whatever its rows.
"""

import dataclasses
import json
import os
from typing import ClassVar

import grain
import numpy as np

from uqa_jax.config.blocks import RUN_ONLY
from uqa_jax.data import arrow_io
from uqa_jax.data import batching
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import qa
from uqa_jax.data import reconstruct as reconstruct_lib
from uqa_jax.data import schema

DEFAULT_BAG_SIZES = {
    "uni_seq_cate_id": 4, "uni_seq_brand_id": 2, "uni_seq_shop_id": 2, "uni_seq_seller_id": 2,
    "uni_seq_title_bpe_token_ids": 16, "uni_seq_cate_bpe_token_ids": 8,
    "uni_seq_shop_bpe_token_ids": 8, "uni_seq_brand_bpe_token_ids": 8,
    "uni_seq_seller_bpe_token_ids": 8,
}


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """How batches are cut from the data (never part of the data recipe): the `input` config block
  (the first five fields), and the batching a stage sets for its run (`RUN_FIELDS`, never set by
  the block: `for_run`)."""
  BLOCK: ClassVar[str] = "input"
  LIMITS: ClassVar[dict] = {"max_text_len": ">= 1", "max_answer_len": ">= 1", "length_window": ">= 0",
                            "workers": ">= -1", "bag_sizes": ">= 1"}
  RUN_FIELDS: ClassVar[tuple[str, ...]] = ("batch_size", "max_len", "system_prompt", "history_clicks", "seed",
                                           "shuffle", "num_epochs", "drop_remainder")
  bag_sizes: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_BAG_SIZES))  # K per column
  max_text_len: int = 192  # T: chat tokens per align row
  max_answer_len: int = chat_lib.MAX_ANSWER_LEN  # A: answer + end-of-turn tokens per align row
  length_window: int = 0  # > 0: align rows sorted by length within windows of this many batches
  widths: tuple = ()  # ((text, answer), ...): align batches cut to the first pair holding their rows
  workers: int = dataclasses.field(default=-1, metadata=RUN_ONLY)  # grain worker processes; -1: by platform
  # Set by the stage for its run:
  batch_size: int = 256
  max_len: int = schema.MAX_LEN
  system_prompt: str = ""  # "": no system turn (the template's default one is removed)
  history_clicks: int = 0  # > 0: the last this many clicked titles written above each question (text users)
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = 1  # None: repeat forever
  drop_remainder: bool = True  # training; eval pads the last batch and marks `valid`

  def __post_init__(self):
    widths = tuple(tuple(w) if isinstance(w, (tuple, list)) else w for w in self.widths)
    pairs = all(isinstance(w, tuple) and len(w) == 2 and all(isinstance(x, int) for x in w) for w in widths)
    if (not pairs or any(not (0 < t <= self.max_text_len and 0 < a <= self.max_answer_len) for t, a in widths)
        or any(t1 >= t2 or a1 > a2 for (t1, a1), (t2, a2) in zip(widths, widths[1:]))
        or (self.max_text_len, self.max_answer_len) in widths):
      raise ValueError(f"input.widths={widths}: expected (text, answer) pairs, text strictly and answer weakly "
                       f"ascending, within (input.max_text_len={self.max_text_len}, "
                       f"input.max_answer_len={self.max_answer_len}) and not equal to both")
    unknown = sorted(set(self.bag_sizes) - set(schema.FEATURE_COLUMNS[1:]))
    if unknown:
      raise ValueError(f"bag_sizes: unknown columns {unknown}; expected some of {schema.FEATURE_COLUMNS[1:]}")

  def for_run(self, **run) -> "InputConfig":
    """This block with a stage's batching (`RUN_FIELDS` only)."""
    unknown = sorted(set(run) - set(self.RUN_FIELDS))
    if unknown:
      raise TypeError(f"InputConfig.for_run: {unknown} are not run fields; expected some of {self.RUN_FIELDS}")
    return dataclasses.replace(self, **run)


class SequenceSource:
  """grain random-access source over one official file; reopens its memory map after pickling."""

  def __init__(self, path: str):
    self.path = path
    self._file = arrow_io.SequenceFile(path)

  def __len__(self):
    return len(self._file)

  @property
  def file(self) -> arrow_io.SequenceFile:
    return self._file

  def __getitem__(self, index):
    return {**self._file.row(int(index)), "_row": int(index)}

  @property
  def language(self) -> str:
    """The data set's language (its dataset_info.json; official files without one: zh)."""
    directory = os.path.dirname(self.path) or "."
    if not os.path.exists(os.path.join(directory, schema.DATASET_INFO)):
      return "zh"
    return arrow_io.read_dataset_info(directory)["language"]

  @property
  def has_text(self) -> bool:
    return self._file.has_text

  def __getstate__(self):
    return {"path": self.path}

  def __setstate__(self, state):
    self.__init__(state["path"])

  def __repr__(self):
    return f"SequenceSource({self.path!r}, rows={len(self)})"


def bags_to_array(bags: arrow_io.Bags, max_len: int, width: int) -> np.ndarray:
  """The last `max_len` steps of `bags` as a right-padded `[max_len, width]` int32 array."""
  start = max(0, bags.num_steps - max_len)
  offsets = bags.offsets[start:]
  ids = bags.ids[offsets[0]:offsets[-1]]
  steps = len(offsets) - 1
  sizes = np.diff(offsets)
  step_of = np.repeat(np.arange(steps), sizes)
  slot = np.arange(ids.size) - np.repeat(offsets[:-1] - offsets[0], sizes)
  keep = slot < width
  out = np.zeros((max_len, width), np.int32)
  out[step_of[keep], slot[keep]] = ids[keep]
  return out


def times_to_array(times: np.ndarray, max_len: int) -> np.ndarray:
  """The last `max_len` click times as right-padded int32 seconds since the first kept one.

  Relative times fit int32 (68 years) where epoch seconds would not stay exact in float32;
  only differences matter to the encoders.
  """
  kept = np.asarray(times[-max_len:], np.int64)
  out = np.zeros((max_len,), np.int32)
  if kept.size:
    out[:kept.size] = np.clip(kept - kept[0], 0, np.iinfo(np.int32).max)
  return out


class RowToArrays(grain.transforms.Map):
  """One row (`SequenceSource` item) -> dict of fixed-shape arrays (see module docstring)."""

  def __init__(self, cfg: InputConfig, path: str, chat: chat_lib.ChatTokenizer | None = None,
               language: str = "zh"):
    self.language = language
    self.max_len = cfg.max_len
    self.widths = dict(cfg.bag_sizes)
    unknown = set(self.widths) - set(schema.FEATURE_COLUMNS)
    if unknown:
      raise ValueError(f"bag_sizes: unknown columns {sorted(unknown)}; expected {schema.FEATURE_COLUMNS}")
    self.path = path
    self.chat = chat
    self.history_clicks = cfg.history_clicks

  def map(self, row: dict) -> dict:
    item = row[schema.ITEM_COLUMN]
    out = {schema.ITEM_COLUMN: bags_to_array(item, self.max_len, 1)[:, 0],
           "lengths": np.int32(min(item.num_steps, self.max_len)), "valid": np.bool_(not row.get("_padding"))}
    for column in schema.FEATURE_COLUMNS[1:]:
      out[column] = bags_to_array(row[column], self.max_len, self.widths.get(column, 1))
    if schema.TIME_COLUMN in row:
      out["timestamps"] = times_to_array(row[schema.TIME_COLUMN], self.max_len)
    if self.chat is not None:
      where = f"{self.path}, row {row.get('_row', '?')}"
      chat = json.loads(row[schema.TEXT_COLUMN])
      text = row[schema.TEXT_COLUMN]
      if self.history_clicks and not row.get("_reconstruct"):
        history = qa.history_text(row, self.history_clicks, self.chat.tokenizer, self.language)
        text = json.dumps(qa.with_history(chat[:-1], history) + chat[-1:], ensure_ascii=False)
      out.update(self.chat(text, where=where))
      if row.get("_reconstruct"):
        out["task"] = np.int32(reconstruct_lib.TASK)
        return out
      question = chat[-2]["content"]
      try:
        task = schema.task_of(row.get(schema.TASK_COLUMN), question, self.language)
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
      out["task"] = np.int32(schema.TASKS.index(task))
    return out


def bag_truncation(path: str, bag_sizes) -> dict[str, tuple[int, int, int]]:
  """Per column whose bags exceed their width K: (bags truncated, all bags, widest bag).

  Batches keep the first K ids of a wider bag; the data stage reports these counts so the
  truncation is never silent.
  """
  widths = dict(bag_sizes)
  out = {}
  for _, batch in arrow_io.SequenceFile(path).record_batches():
    for column in schema.FEATURE_COLUMNS[1:]:
      _, bags, _ = arrow_io.column_views(batch.column(column))
      sizes = np.diff(bags)
      over = int((sizes > widths.get(column, 1)).sum())
      cut, total, widest = out.get(column, (0, 0, 0))
      out[column] = (cut + over, total + sizes.size, max(widest, int(sizes.max(initial=0))))
  return {c: v for c, v in out.items() if v[0]}


class ReadBatch(grain.transforms.Map):
  """Row indices [n] of a pretrain file -> one batch of fixed-shape arrays, read column by column
  with one vectorised gather each (`SequenceFile.gather_bags`): the arrays `RowToArrays` gives
  row by row, stacked. -1 (`batching.ProcessSlice`'s padding) reads row 0 marked not `valid`; a
  short last batch is completed to `batch_size` with zero rows marked not `valid` (as
  `batching.padded_batch`)."""

  def __init__(self, source: SequenceSource, cfg: InputConfig, batch_size: int):
    self.source, self.max_len, self.batch_size = source, cfg.max_len, batch_size
    self.widths = dict(cfg.bag_sizes)

  def map(self, indices):
    indices = np.asarray(indices, np.int64)
    rows, file, n = np.maximum(indices, 0), self.source.file, len(indices)
    out = {schema.ITEM_COLUMN: file.gather_bags(rows, schema.ITEM_COLUMN, self.max_len, 1)[..., 0],
           "lengths": np.minimum(file.num_steps(rows), self.max_len).astype(np.int32), "valid": indices >= 0}
    for column in schema.FEATURE_COLUMNS[1:]:
      out[column] = file.gather_bags(rows, column, self.max_len, self.widths.get(column, 1))
    if file.has_time:
      out["timestamps"] = file.gather_times(rows, self.max_len)
    if n < self.batch_size:
      out = {k: np.concatenate([v, np.zeros((self.batch_size - n, *v.shape[1:]), v.dtype)]) for k, v in out.items()}
    return out


def _index_array(indices) -> np.ndarray:
  return np.asarray(list(indices), np.int64)


class ReadRow(grain.transforms.Map):
  """Row index -> the source's row; -1 (`batching.ProcessSlice`'s padding) -> row 0 marked as padding."""

  def __init__(self, source: SequenceSource):
    self.source = source

  def map(self, index):
    return self.source[index] if index >= 0 else dict(self.source[0], _padding=True)


def make_dataset(path: str, cfg: InputConfig, *, tokenizer=None, process_index: int | None = None,
                 process_count: int | None = None, reconstruct: reconstruct_lib.Task | None = None) -> "Batches":
  """The batched dataset over `path`; pass `tokenizer` for align files (chat columns). With
  `reconstruct`, an align file's rows become reconstruction rows (`data/reconstruct.py`; no
  length window)."""
  if process_index is None or process_count is None:
    import jax  # imported here so data tools that never batch do not pay for it
    process_index, process_count = jax.process_index(), jax.process_count()
  source = SequenceSource(path)
  if source.has_text != (tokenizer is not None):
    raise ValueError(f"{path}: {'align' if source.has_text else 'pretrain'} file; "
                     f"a tokenizer is {'required' if source.has_text else 'not used'}")
  ds = grain.MapDataset.range(len(source))
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs)
  if reconstruct is not None:  # each element also names its place in the stream (the draw's seed)
    if tokenizer is None:
      raise ValueError(f"{path}: reconstruction rows are made from an align file's rows, with a tokenizer")
    ds = ds.map_with_index(reconstruct_lib.tag(len(source)))
  elif cfg.length_window and tokenizer is not None:
    ds = batching.LengthGrouped(ds, batching.chat_lengths(path), window=cfg.length_window, batch_size=cfg.batch_size,
                                seed=cfg.seed)
  if process_count > 1:
    if cfg.widths and tokenizer is not None:  # each process would cut its rows to its own longest
      raise ValueError(f"input.widths={tuple(cfg.widths)} cuts a batch by its longest row, which differs between "
                       "processes; set it to () for a multi-process run")
    ds = batching.ProcessSlice(ds, batch_size=cfg.batch_size, index=process_index, count=process_count,
                      pad=not cfg.drop_remainder)
  if len(ds) == 0:
    raise ValueError(f"{path}: no rows for process {process_index} of {process_count}")
  local_batch = cfg.batch_size // process_count
  if tokenizer is None:  # pretrain files: each batch's rows read in one vectorised pass per column
    ds = ds.batch(local_batch, drop_remainder=cfg.drop_remainder, batch_fn=_index_array)
    return Batches(ds.map(ReadBatch(source, cfg, local_batch)), resolve_workers(cfg.workers))
  chat = chat_lib.ChatTokenizer(tokenizer, cfg.max_text_len, cfg.system_prompt, cfg.max_answer_len)
  if reconstruct is None:
    ds = ds.map(ReadRow(source))
  else:
    ds = ds.map(reconstruct_lib.Reconstruct(source, chat, task=reconstruct, seed=cfg.seed, language=source.language))
  ds = ds.map(RowToArrays(cfg, path, chat, source.language))
  if cfg.drop_remainder:
    ds = ds.batch(local_batch, drop_remainder=True)
  else:
    ds = ds.batch(local_batch, drop_remainder=False, batch_fn=batching.padded_batch(local_batch))
  if cfg.widths:
    ds = ds.map(batching.CutToWidth(cfg.widths, cfg.max_text_len, cfg.max_answer_len))
  return Batches(ds, resolve_workers(cfg.workers))


def resolve_workers(workers: int) -> int:
  """`input.workers`: -1 picks by platform (none on CPU, where the step needs the cores; on an
  accelerator half the host's cores, at most 8); otherwise the number given."""
  if workers >= 0:
    return workers
  import jax  # imported here so data tools that never batch do not pay for it
  return 0 if jax.default_backend() == "cpu" else min(8, max(1, (os.cpu_count() or 2) // 2))


class Batches:
  """The batches of one file, in order (a grain `MapDataset` of batches); each iterator reads
  them in this process or in `workers` grain worker processes, and resumes at a batch count."""

  def __init__(self, ds: grain.MapDataset, workers: int = 0):
    self.ds, self.workers = ds, workers

  def __len__(self):
    return len(self.ds)

  def __iter__(self) -> "BatchIterator":
    return BatchIterator(self.ds, self.workers)


class BatchIterator:
  """Batches of a `MapDataset` from batch `next_index` on; its state is that count alone, so a
  checkpoint resumes with any number of workers (and reads the states grain's own iterator wrote).

  In-process, grain reads ahead on 2 threads, at most 4 batches; with workers, each of them
  builds every `workers`-th batch (`mp_prefetch`, in batch order), 2 ahead. The grain checkpoint
  handler saves `get_state()` (JSON bytes) and calls `set_state` then `start_prefetch` on restore.
  """

  THREADS, AHEAD = 2, 4

  def __init__(self, ds: grain.MapDataset, workers: int = 0):
    self.ds, self.workers = ds, workers
    self.next_index = 0
    self._it = None

  def __iter__(self):
    return self

  def _open(self):
    ds = self.ds[self.next_index:] if self.next_index else self.ds
    if not self.workers:
      self._it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=self.THREADS,
                                                           prefetch_buffer_size=self.AHEAD)))
      return
    from absl import flags  # grain's workers read an absl flag: parsed in `main`, not in a library caller
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    self._it = iter(it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=self.workers, per_worker_buffer_size=2)))

  def __next__(self):
    if self._it is None:
      self._open()
    batch = next(self._it)
    self.next_index += 1
    return batch

  def get_state(self) -> bytes:
    return json.dumps({"next_index": self.next_index}).encode()

  def set_state(self, state) -> None:
    state = json.loads(state) if isinstance(state, (bytes, str)) else state
    self.close()
    self.next_index = int(state["next_index"])

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore; the read-ahead starts at the next batch."""

  def close(self) -> None:
    it, self._it = self._it, None
    if it is not None and hasattr(it, "close"):
      it.close()
