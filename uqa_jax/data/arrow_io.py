"""Reading and writing the official Arrow IPC files, memory-mapped for random access.

A sequence column is `list<list<int64>>`: row -> time step -> bag of ids. `SequenceFile`
keeps, per record batch and column, three zero-copy numpy views of the mapped file
(step offsets, bag offsets, ids), so fetching one row costs a few slices, not a Python
conversion of the whole row.
"""

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa

from uqa_jax.data import schema
from uqa_jax.runtime import atomic
from uqa_jax.runtime import errors


class DataFileError(errors.Refused, ValueError):
  """A data file does not match the official schema; the message names file, row, column."""


@dataclasses.dataclass(frozen=True)
class Bags:
  """One row of one sequence column: `ids[offsets[t]:offsets[t+1]]` is the bag at step t."""
  ids: np.ndarray  # [N] int64
  offsets: np.ndarray  # [T+1] int32, offsets[0] == 0

  @property
  def num_steps(self) -> int:
    return len(self.offsets) - 1

  def bag(self, t: int) -> np.ndarray:
    return self.ids[self.offsets[t]:self.offsets[t + 1]]

  def to_lists(self) -> list[list[int]]:
    return [self.bag(t).tolist() for t in range(self.num_steps)]


def _file_schema(path: str, names) -> pa.Schema:
  """The file schema for a set of column names (align iff `text` is among them)."""
  missing = [c for c in schema.FEATURE_COLUMNS if c not in names]
  if missing:
    raise DataFileError(f"{path}: cannot write, missing columns {missing}")
  arrow_schema = schema.ALIGN_SCHEMA if schema.TEXT_COLUMN in names else schema.PRETRAIN_SCHEMA
  if schema.TASK_COLUMN in names:
    arrow_schema = arrow_schema.append(pa.field(schema.TASK_COLUMN, pa.string()))
  if schema.TIME_COLUMN in names:
    arrow_schema = arrow_schema.append(pa.field(schema.TIME_COLUMN, schema.TIME_TYPE))
  unknown = set(names) - set(arrow_schema.names)
  if unknown:
    raise DataFileError(f"{path}: cannot write, unknown columns {sorted(unknown)}")
  return arrow_schema


def _record_batch(path: str, arrow_schema: pa.Schema, columns: dict) -> pa.RecordBatch:
  num_rows = {len(v) for v in columns.values()}
  if len(num_rows) != 1:
    raise DataFileError(f"{path}: columns have different row counts {sorted(num_rows)}")
  arrays = []
  for f in arrow_schema:
    column = columns[f.name]
    array = column if isinstance(column, pa.Array) else pa.array(column, type=f.type)
    if not array.type.equals(f.type):
      raise DataFileError(f"{path}: cannot write column {f.name!r} of type {array.type}, expected {f.type}")
    arrays.append(array)
  return pa.record_batch(arrays, schema=arrow_schema)


def write_sequence_batches(path: str, batches) -> int:
  """Writes an official-format file from an iterable of column dicts (one record batch each).

  Each dict maps every name in `schema.FEATURE_COLUMNS` to a list (one entry per row) of lists
  of bags, or to an Arrow array of that type; align files also carry `text` (JSON chat strings),
  and ours may carry `task` and `uni_seq_timestamp` (a list of int64 seconds per row). The
  schema is chosen by the first batch's columns; every batch must have the same ones. Batches
  are built and written one at a time, so a file larger than memory can be written.
  Returns the number of rows.
  """
  rows = 0

  def write(tmp_path):
    nonlocal rows
    writer = sink = arrow_schema = None
    try:
      for columns in batches:
        if arrow_schema is None:
          arrow_schema = _file_schema(path, columns)
          sink = pa.OSFile(tmp_path, "wb")
          writer = pa.ipc.new_file(sink, arrow_schema)
        elif set(columns) != set(arrow_schema.names):
          raise DataFileError(f"{path}: a batch has columns {sorted(columns)}, the first had "
                              f"{sorted(arrow_schema.names)}")
        batch = _record_batch(path, arrow_schema, columns)
        writer.write_batch(batch)
        rows += batch.num_rows
      if arrow_schema is None:
        raise DataFileError(f"{path}: nothing to write (no batches)")
    finally:
      if writer is not None:
        writer.close()
      if sink is not None:
        sink.close()

  atomic.write_with(path, write)
  return rows


def write_sequences(path: str, columns: dict, *, batch_rows: int = 4096) -> int:
  """Writes an official-format file from whole columns (see `write_sequence_batches`)."""
  arrow_schema = _file_schema(path, columns)
  table = _record_batch(path, arrow_schema, columns)
  return write_sequence_batches(
      path, ({f.name: table.column(f.name).slice(start, batch_rows) for f in arrow_schema}
             for start in range(0, max(table.num_rows, 1), batch_rows)))


def open_arrow(path: str) -> pa.ipc.RecordBatchFileReader:
  """Opens an Arrow IPC file memory-mapped; a truncated or foreign file raises DataFileError."""
  if not os.path.isfile(path):
    raise DataFileError(f"{path}: no such file")
  try:
    return pa.ipc.open_file(pa.memory_map(path, "r"))
  except (pa.ArrowInvalid, OSError) as e:
    raise DataFileError(f"{path}: not a readable Arrow IPC file (truncated or another format?): {e}") from e


def check_schema(path: str, arrow_schema: pa.Schema, *, align: bool | None = None) -> list[str]:
  """Returns one message per missing or mistyped column (empty when the schema is right)."""
  problems = []
  expected = {c: schema.SEQ_TYPE for c in schema.FEATURE_COLUMNS}
  if align is None:
    align = os.path.basename(path).startswith("align")
  if align:
    expected[schema.TEXT_COLUMN] = pa.string()
  for name, typ in expected.items():
    idx = arrow_schema.get_field_index(name)
    if idx < 0:
      problems.append(f"{path}: column {name!r}: missing (expected {typ})")
    elif not arrow_schema.field(idx).type.equals(typ):
      problems.append(f"{path}: column {name!r}: type {arrow_schema.field(idx).type}, expected {typ}")
  if schema.TASK_COLUMN in arrow_schema.names:
    typ = arrow_schema.field(schema.TASK_COLUMN).type
    if not (typ.equals(pa.string()) or typ.equals(pa.large_string())):
      problems.append(f"{path}: column {schema.TASK_COLUMN!r}: type {typ}, expected string")
  if schema.TIME_COLUMN in arrow_schema.names:
    typ = arrow_schema.field(schema.TIME_COLUMN).type
    if not typ.equals(schema.TIME_TYPE):
      problems.append(f"{path}: column {schema.TIME_COLUMN!r}: type {typ}, expected {schema.TIME_TYPE}")
  return problems


def column_views(array: pa.ListArray):
  """Zero-copy (step offsets, bag offsets, ids) numpy views of a list<list<int64>> chunk."""
  steps = array.offsets.to_numpy(zero_copy_only=True)
  inner = array.values
  bags = inner.offsets.to_numpy(zero_copy_only=True)
  ids = inner.values.to_numpy(zero_copy_only=True)
  return steps, bags, ids


def time_views(array: pa.ListArray):
  """Zero-copy (step offsets, int64 times) numpy views of a list<int64> chunk (no nulls inside)."""
  return array.offsets.to_numpy(zero_copy_only=True), array.values.to_numpy(zero_copy_only=True)


def item_sequences(path: str):
  """Yields, per record batch of `path`, zero-copy (row offsets into steps, item id per step).

  Row r's clicks are `item_ids[offsets[r]:offsets[r + 1]]` (every item bag holds exactly one id;
  the checker enforces it).
  """
  for _, batch in SequenceFile(path).record_batches():
    steps, bags, ids = column_views(batch.column(schema.ITEM_COLUMN))
    yield steps, ids[bags[:-1]]


class SequenceFile:
  """Random access to the rows of one official-format file (memory-mapped)."""

  def __init__(self, path: str):
    self.path = path
    reader = open_arrow(path)
    problems = check_schema(path, reader.schema)
    if problems:
      raise DataFileError("\n".join(problems))
    self.schema = reader.schema
    self.has_text = schema.TEXT_COLUMN in reader.schema.names
    self.has_task = schema.TASK_COLUMN in reader.schema.names
    self.has_time = schema.TIME_COLUMN in reader.schema.names
    self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    sizes = np.array([b.num_rows for b in self._batches], dtype=np.int64)
    self._starts = np.concatenate([[0], np.cumsum(sizes)])
    self._views = [{c: column_views(b.column(c)) for c in schema.FEATURE_COLUMNS}
                   for b in self._batches]
    self._time_views = None
    if self.has_time:
      columns = [b.column(schema.TIME_COLUMN) for b in self._batches]
      if any(c.null_count or c.values.null_count for c in columns):
        raise DataFileError(f"{path}: column {schema.TIME_COLUMN!r}: null values "
                            f"(python -m data_prep.check names the rows)")
      self._time_views = [time_views(c) for c in columns]

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, row: int) -> tuple[int, int]:
    if not 0 <= row < len(self):
      raise IndexError(f"{self.path}: row {row} out of range [0, {len(self)})")
    b = int(np.searchsorted(self._starts, row, side="right") - 1)
    return b, row - int(self._starts[b])

  def bags(self, row: int, column: str) -> Bags:
    b, r = self._locate(row)
    steps, bags, ids = self._views[b][column]
    s0, s1 = steps[r], steps[r + 1]
    offsets = bags[s0:s1 + 1]
    return Bags(ids[offsets[0]:offsets[-1]], (offsets - offsets[0]).astype(np.int32))

  def timestamps(self, row: int) -> np.ndarray | None:
    """[steps] int64 click times of one row (a zero-copy view), or None without the column."""
    if not self.has_time:
      return None
    b, r = self._locate(row)
    offsets, values = self._time_views[b]
    return values[offsets[r]:offsets[r + 1]]

  def text(self, row: int) -> str:
    b, r = self._locate(row)
    return self._batches[b].column(schema.TEXT_COLUMN)[r].as_py()

  def task(self, row: int) -> str | None:
    if not self.has_task:
      return None
    b, r = self._locate(row)
    return self._batches[b].column(schema.TASK_COLUMN)[r].as_py()

  def row(self, row: int) -> dict:
    """Every column of one row: `Bags` per feature, plus `text` / `task` / timestamps where present."""
    out = {c: self.bags(row, c) for c in schema.FEATURE_COLUMNS}
    if self.has_time:
      out[schema.TIME_COLUMN] = self.timestamps(row)
    if self.has_text:
      out[schema.TEXT_COLUMN] = self.text(row)
    if self.has_task:
      out[schema.TASK_COLUMN] = self.task(row)
    return out

  # --- many rows at once (a batch): one vectorised gather per record batch they fall in ---------
  def _groups(self, rows: np.ndarray):
    """Yields (positions in `rows`, record batch index, rows local to it) per record batch."""
    rows = np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
      bad = int(rows[(rows < 0) | (rows >= len(self))][0])
      raise IndexError(f"{self.path}: row {bad} out of range [0, {len(self)})")
    batch_of = np.searchsorted(self._starts, rows, side="right") - 1
    for b in np.unique(batch_of):
      at = np.flatnonzero(batch_of == b)
      yield at, int(b), rows[at] - self._starts[b]

  def num_steps(self, rows, column: str = schema.ITEM_COLUMN) -> np.ndarray:
    """[n] int64 steps of each row in `column`."""
    out = np.zeros(len(rows), np.int64)
    for at, b, local in self._groups(rows):
      steps = self._views[b][column][0]
      out[at] = steps[local + 1] - steps[local]
    return out

  def gather_bags(self, rows, column: str, max_len: int, width: int) -> np.ndarray:
    """[n, max_len, width] int32: each row's last `max_len` steps of `column`, right-padded
    with 0, each step's first `width` ids (what `pipeline.bags_to_array` gives one row)."""
    out = np.zeros((len(rows), max_len, width), np.int32)
    t_L, k_K = np.arange(max_len), np.arange(width)
    for at, b, local in self._groups(rows):
      steps, bags, ids = self._views[b][column]
      if not ids.size:  # every bag of this record batch is empty
        continue
      end_n = steps[local + 1]
      kept_n = np.minimum(end_n - steps[local], max_len)
      live_nxL = t_L[None] < kept_n[:, None]
      step_nxL = np.where(live_nxL, end_n[:, None] - kept_n[:, None] + t_L[None], 0)
      lo_nxL = bags[step_nxL]
      size_nxL = np.where(live_nxL, bags[step_nxL + 1] - lo_nxL, 0)
      take_nxLxK = k_K < size_nxL[..., None]
      out[at] = np.where(take_nxLxK, ids[np.where(take_nxLxK, lo_nxL[..., None] + k_K, 0)], 0)
    return out

  def gather_times(self, rows, max_len: int) -> np.ndarray:
    """[n, max_len] int32: each row's last `max_len` click times in seconds since the first kept
    one, clipped to int32, right-padded with 0 (what `pipeline.times_to_array` gives one row)."""
    out = np.zeros((len(rows), max_len), np.int32)
    t_L = np.arange(max_len)
    for at, b, local in self._groups(rows):
      offsets, values = self._time_views[b]
      if not values.size:
        continue
      end_n = offsets[local + 1]
      kept_n = np.minimum(end_n - offsets[local], max_len)
      live_nxL = t_L[None] < kept_n[:, None]
      times_nxL = values[np.where(live_nxL, end_n[:, None] - kept_n[:, None] + t_L[None], 0)]
      first_n = values[np.where(kept_n > 0, end_n - kept_n, 0)]
      out[at] = np.where(live_nxL, np.clip(times_nxL - first_n[:, None], 0, np.iinfo(np.int32).max), 0)
    return out

  def record_batches(self):
    """Yields (first row index, pyarrow.RecordBatch) in file order."""
    for start, batch in zip(self._starts, self._batches):
      yield int(start), batch


# --- dataset_info.json -----------------------------------------------------------------

INFO_KEYS = ("name", "source", "language", "tokenizer", "vocab_sizes", "max_len", "counts")


def write_dataset_info(directory: str, info: dict) -> None:
  missing = [k for k in INFO_KEYS if k not in info]
  if missing:
    raise ValueError(f"dataset info for {directory} lacks keys {missing}")
  path = os.path.join(directory, schema.DATASET_INFO)

  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(info, f, indent=2, ensure_ascii=False, sort_keys=True)

  atomic.write_with(path, write)


def read_dataset_info(directory: str) -> dict:
  """Reads and validates `dataset_info.json`; errors name the file and the key."""
  path = os.path.join(directory, schema.DATASET_INFO)
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except FileNotFoundError:
    raise DataFileError(f"{path}: missing (official downloads lack it: run "
                        f"`python -m data_prep.uqabench {directory}` to derive it)") from None
  except json.JSONDecodeError as e:
    raise DataFileError(f"{path}: not valid JSON: {e}") from e
  missing = [k for k in INFO_KEYS if k not in info]
  if missing:
    raise DataFileError(f"{path}: missing keys {missing}")
  vocab = info["vocab_sizes"]
  bad = [t for t in schema.TABLES if not isinstance(vocab.get(t), int) or vocab[t] < 1]
  if bad:
    raise DataFileError(f"{path}: vocab_sizes must give a positive int for tables {list(schema.TABLES)}; "
                        f"bad or missing: {bad}")
  if info["language"] not in schema.LANGUAGES:
    raise DataFileError(f"{path}: language {info['language']!r}, expected one of {schema.LANGUAGES}")
  return info
