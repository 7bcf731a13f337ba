"""Validates a data set directory against the official schema; reports every problem.

Checks: files present and readable, column names and types, null values, empty or
over-long sequences, steps that disagree across columns, ids outside their vocabulary,
item bags that do not hold exactly one id, malformed chat JSON, unknown or inconsistent
task labels, and (where the optional timestamp column exists) negative or decreasing times.
Id checks are vectorised over each record batch, so official-size files are checked at
memory-map speed.
"""

import collections
import dataclasses
import json
import os

import numpy as np

from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import schema


@dataclasses.dataclass(frozen=True)
class Problem:
  file: str
  row: int | None  # None: the whole file or column
  column: str | None
  message: str

  def __str__(self):
    where = self.file
    if self.row is not None:
      where += f", row {self.row}"
    if self.column is not None:
      where += f", column {self.column!r}"
    return f"{where}: {self.message}"


@dataclasses.dataclass
class Report:
  directory: str
  problems: list[Problem] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  rows: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def ok(self) -> bool:
    return not self.problems

  def format(self, max_per_kind: int = 20) -> str:
    """Every problem, up to `max_per_kind` lines per (file, column, kind) plus a count of the rest."""
    lines = [f"checked {self.directory}: " + ", ".join(f"{f} {n:,} rows" for f, n in self.rows.items())]
    lines += [f"note: {n}" for n in self.notes]
    groups = collections.defaultdict(list)
    for p in self.problems:
      groups[(p.file, p.column, p.message.split(":")[0])].append(p)
    for group in groups.values():
      lines += [f"ERROR {p}" for p in group[:max_per_kind]]
      if len(group) > max_per_kind:
        lines.append(f"ERROR ... and {len(group) - max_per_kind:,} more like the above")
    lines.append(f"{len(self.problems):,} problem(s)" if self.problems else "OK: no problems found")
    return "\n".join(lines)


def _rows_of(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Maps flat positions to the index of the list (by `offsets`) that holds them."""
  return np.searchsorted(offsets, positions, side="right") - 1


def _null_rows(array) -> np.ndarray:
  """Rows of a list chunk that are null themselves (not their contents)."""
  return np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)) if array.null_count else []


def _check_feature(path, start, array, column, vocab_size, max_len, steps_ref, report):
  """Checks one list<list<int64>> chunk; returns its per-row step counts."""
  add = lambda row, msg: report.problems.append(Problem(path, start + int(row), column, msg))
  for r in _null_rows(array):
    add(r, "null: value is null, expected a list of bags")
  if array.values.null_count or array.values.values.null_count:
    add(0, "null: null bags or ids inside the column (first affected record batch starts here)")
    return None
  steps, bags, ids = arrow_io.column_views(array)
  num_steps = np.diff(steps)
  if steps_ref is None:
    for r in np.flatnonzero(num_steps == 0):
      add(r, "empty sequence: no time steps")
    for r in np.flatnonzero(num_steps > max_len):
      add(r, f"over-long sequence: {num_steps[r]} steps, max_len is {max_len}")
  else:
    for r in np.flatnonzero(num_steps != steps_ref):
      add(r, f"step count mismatch: {num_steps[r]} steps, the item column has {steps_ref[r]}")
  low = 1 if column == schema.ITEM_COLUMN else 0
  bad = np.flatnonzero((ids < low) | (ids >= vocab_size))
  if bad.size:
    bad_rows = _rows_of(_rows_of(bad, bags), steps)
    for r, i in zip(bad_rows, bad):
      add(r, f"id out of range: {ids[i]} not in [{low}, {vocab_size})")
  if column == schema.ITEM_COLUMN:
    sizes = np.diff(bags)
    for r in np.unique(_rows_of(np.flatnonzero(sizes != 1), steps)):
      add(r, "item bag size: every step's item bag must hold exactly one id")
  return num_steps


def _check_time(path, start, array, steps_ref, report):
  """Checks the optional list<int64> timestamp chunk: no nulls, one time per step, t >= 0, sorted."""
  add = lambda row, msg: report.problems.append(Problem(path, start + int(row), schema.TIME_COLUMN, msg))
  for r in _null_rows(array):
    add(r, "null: value is null, expected a list of int64 times")
  if array.values.null_count:
    add(0, "null: null times inside the column (first affected record batch starts here)")
    return
  offsets, times = arrow_io.time_views(array)
  num_steps = np.diff(offsets)
  if steps_ref is not None:
    for r in np.flatnonzero(num_steps != steps_ref):
      add(r, f"step count mismatch: {num_steps[r]} times, the item column has {steps_ref[r]} steps")
  for r in np.unique(_rows_of(np.flatnonzero(times < 0), offsets)):
    add(r, "negative time: click times are seconds >= 0")
  falls = np.flatnonzero(np.diff(times) < 0) + 1  # position of a time smaller than its predecessor
  falls = falls[np.isin(falls, offsets[1:-1], invert=True)]  # a row's first step may fall
  for r in np.unique(_rows_of(falls, offsets)):
    add(r, "decreasing time: steps must be in click order (non-decreasing times)")


def _check_chat(path, start, texts, tasks, language, report):
  for r, text in enumerate(texts):
    add = lambda msg: report.problems.append(Problem(path, start + r, schema.TEXT_COLUMN, msg))
    if text is None:
      add("malformed chat: null")
      continue
    try:
      chat = json.loads(text)
    except json.JSONDecodeError as e:
      add(f"malformed chat: not JSON ({e})")
      continue
    if (not isinstance(chat, list) or len(chat) < 2
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                   and isinstance(m.get("content"), str) for m in chat)):
      add("malformed chat: expected a list of {role, content} messages, user then assistant")
      continue
    if chat[-1]["role"] != "assistant" or chat[-2]["role"] != "user":
      add(f"malformed chat: roles {[m['role'] for m in chat]}, expected ... user, assistant")
      continue
    try:
      answers_lib.check_gold(chat[-1]["content"])
    except ValueError as e:
      add(str(e))
    try:
      schema.task_of(tasks[r] if tasks is not None else None, chat[-2]["content"], language)
    except ValueError as e:
      column = schema.TASK_COLUMN if tasks is not None else schema.TEXT_COLUMN
      report.problems.append(Problem(path, start + r, column, str(e)))


def check_file(path: str, vocab_sizes: dict, max_len: int, language: str, report: Report) -> None:
  try:
    reader = arrow_io.open_arrow(path)
  except arrow_io.DataFileError as e:
    report.problems.append(Problem(path, None, None, f"unreadable: {e}"))
    return
  schema_problems = arrow_io.check_schema(path, reader.schema)
  if schema_problems:
    report.problems += [Problem(path, None, None, "schema: " + m.split(": ", 1)[1])
                        for m in schema_problems]
    return
  align = schema.TEXT_COLUMN in reader.schema.names
  start = 0
  try:
    for i in range(reader.num_record_batches):
      batch = reader.get_batch(i)
      steps_ref = None
      for feature in schema.FEATURES:
        n = _check_feature(path, start, batch.column(feature.column), feature.column,
                           vocab_sizes[feature.table], max_len, steps_ref, report)
        if feature.column == schema.ITEM_COLUMN:
          steps_ref = n
      if schema.TIME_COLUMN in reader.schema.names:
        _check_time(path, start, batch.column(schema.TIME_COLUMN), steps_ref, report)
      if align:
        tasks = (batch.column(schema.TASK_COLUMN).to_pylist()
                 if schema.TASK_COLUMN in reader.schema.names else None)
        _check_chat(path, start, batch.column(schema.TEXT_COLUMN).to_pylist(), tasks, language, report)
      start += batch.num_rows
  except (OSError, ValueError) as e:  # a damaged record batch inside an intact footer
    report.problems.append(Problem(path, start, None, f"unreadable record batch: {e}"))
  report.rows[os.path.basename(path)] = start


def check_directory(directory: str, files=schema.ALL_FILES) -> Report:
  """Checks every official file in `directory` against its `dataset_info.json`.

  Without `dataset_info.json` (an official download), the official vocabulary sizes,
  max length 512 and Chinese are assumed, and a note says so.
  """
  report = Report(directory)
  if not os.path.isdir(directory):
    report.problems.append(Problem(directory, None, None, "not a directory"))
    return report
  info = None
  try:
    info = arrow_io.read_dataset_info(directory)
    vocab, max_len, language = info["vocab_sizes"], info["max_len"], info["language"]
  except arrow_io.DataFileError as e:
    if os.path.exists(os.path.join(directory, schema.DATASET_INFO)):
      report.problems.append(Problem(os.path.join(directory, schema.DATASET_INFO), None, None, str(e)))
      return report
    report.notes.append(f"no {schema.DATASET_INFO}: assuming the official vocabulary sizes, "
                        f"max_len {schema.MAX_LEN} and language zh")
    vocab, max_len, language = schema.OFFICIAL_VOCAB_SIZES, schema.MAX_LEN, "zh"
  for name in files:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      report.problems.append(Problem(path, None, None, "missing: expected file not found"))
      continue
    check_file(path, vocab, max_len, language, report)
    rows = report.rows.get(name)
    if rows == 0:
      report.problems.append(Problem(path, None, None, "empty: no rows"))
    expected = (info.get("counts") or {}).get(name) if info else None
    if rows is not None and expected is not None and rows != expected:
      report.problems.append(Problem(path, None, None, f"{rows} rows, {schema.DATASET_INFO} says {expected}"))
  return report
