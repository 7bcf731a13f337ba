"""The batching transforms of the grain pipeline (`pipeline.make_dataset` chains them).

  LengthGrouped  `input.length_window`: rows regrouped so each batch holds rows of similar length
  ProcessSlice   several JAX processes: each reads its block of every global batch's rows
  CutToWidth     `input.widths`: an align batch cut to the first (text, answer) width holding its rows
  padded_batch   eval: the last batch padded, its padding rows marked `valid` False
"""

import collections
import threading

import grain
import numpy as np

from uqa_jax.data import arrow_io


def padded_batch(batch_size: int):
  def batch_fn(rows):
    rows = list(rows)
    pad = {k: np.zeros_like(v) for k, v in rows[0].items()}
    pad["valid"] = np.bool_(False)
    rows += [pad] * (batch_size - len(rows))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  return batch_fn


class LengthGrouped(grain.MapDataset):
  """Row indices regrouped so that each batch holds rows of similar length.

  Window w covers the parent's elements [w*W*B, (w+1)*W*B) (W = `window` batches of B rows):
  they are sorted by `lengths_R` (stable) and cut into W batches, which come out in an order
  drawn from (`seed`, w). Every parent element appears exactly once. grain reads elements on
  several threads, so a window's order is computed under a lock and kept in a small cache;
  each call reads the order it was handed, never a shared slot another thread may refill.
  """

  CACHED_WINDOWS = 4

  def __init__(self, parent: grain.MapDataset, lengths_R: np.ndarray, *, window: int, batch_size: int, seed: int):
    super().__init__(parent)
    self.lengths_R = np.asarray(lengths_R)
    self.span, self.batch_size, self.seed = window * batch_size, batch_size, seed
    self._lock = threading.Lock()
    self._orders = collections.OrderedDict()

  def __len__(self):
    return len(self._parent)

  def _order(self, w: int) -> np.ndarray:
    start = w * self.span
    rows = np.array([self._parent[i] for i in range(start, min(start + self.span, len(self._parent)))])
    rows = rows[np.argsort(self.lengths_R[rows], kind="stable")]
    batches = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
    order = np.random.default_rng((self.seed, w)).permutation(len(batches))
    return np.concatenate([batches[b] for b in order])

  def _window(self, w: int) -> np.ndarray:
    with self._lock:
      order = self._orders.get(w)
      if order is None:
        order = self._orders[w] = self._order(w)
        while len(self._orders) > self.CACHED_WINDOWS:
          self._orders.popitem(last=False)
      return order

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return int(self._window(index // self.span)[index % self.span])

  def __getstate__(self):  # a lock does not pickle (grain may copy datasets to worker processes)
    return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_orders")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock, self._orders = threading.Lock(), collections.OrderedDict()

  def __str__(self):
    return f"LengthGrouped(window={self.span // self.batch_size} batches)"


class ProcessSlice(grain.MapDataset):
  """Process `index` of `count`'s rows of each global batch of `batch_size` parent elements.

  Local element j is the parent's element (j // b) * batch_size + index * b + j % b, with
  b = batch_size / count: process p holds rows [p*b, (p+1)*b) of every global batch, the block
  `jax.make_array_from_process_local_data` expects along a batch axis split over processes.
  With `pad`, the last global batch is completed with -1 (`ReadRow` turns it into a padding row
  marked not `valid`), so every process makes the same number of batches.
  """

  def __init__(self, parent: grain.MapDataset, *, batch_size: int, index: int, count: int, pad: bool):
    super().__init__(parent)
    if batch_size % count:
      raise ValueError(f"batch_size {batch_size} is global: it must split evenly over {count} processes")
    self.batch_size, self.local, self.index = batch_size, batch_size // count, index
    full, rest = divmod(len(parent), batch_size)
    self.batches = full + (1 if pad and rest else 0)

  def __len__(self):
    return self.batches * self.local

  def __getitem__(self, j):
    if isinstance(j, slice):
      return self.slice(j)
    k, offset = divmod(j, self.local)
    i = k * self.batch_size + self.index * self.local + offset
    return self._parent[i] if i < len(self._parent) else -1

  def __str__(self):
    return f"ProcessSlice(process {self.index}, {self.local} of each {self.batch_size} rows)"


class CutToWidth(grain.transforms.Map):
  """An align batch with its T and A axes cut to the first of `widths` ((text, answer) pairs,
  ascending) that holds its longest chat and its longest answer, else left at (`max_text_len`,
  `max_answer_len`): a few fixed shapes, so one compiled step each. Rows are left-aligned and
  answer slots are filled from the front, so only padding is cut."""

  def __init__(self, widths, max_text_len: int, max_answer_len: int):
    self.widths, self.full = tuple(tuple(w) for w in widths), (max_text_len, max_answer_len)

  def map(self, batch: dict) -> dict:
    text = int(batch["attention_mask"].sum(axis=1).max())
    answer = int((batch["answer_at"] >= 0).sum(axis=1).max())
    t, a = next((w for w in self.widths if w[0] >= text and w[1] >= answer), self.full)
    return {**batch, **{k: batch[k][:, :t] for k in ("input_ids", "loss_mask", "attention_mask")},
            "answer_at": batch["answer_at"][:, :a]}


def chat_lengths(path: str) -> np.ndarray:
  """Characters of each row's chat text: `length_window`'s sort key (no tokenizer needed)."""
  file = arrow_io.SequenceFile(path)
  return np.array([len(file.text(r)) for r in range(len(file))], np.int64)
