"""Official schema round trip and random access."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import schema


QUESTIONS = {"en": "How long is the user's click history?", "zh": "用户浏览历史的长度是多少？"}


def random_columns(rng, rows, align=False, language="en"):
  """Valid random rows; align rows ask an MF question (with a `task` column in `en`, as ours do)."""
  cols = {}
  lengths = rng.integers(1, 20, size=rows)
  for f in schema.FEATURES:
    width = (1, 1) if f.column == schema.ITEM_COLUMN else (0, 6)
    cols[f.column] = [[rng.integers(1, 50, size=rng.integers(*width) if width[1] > 1 else 1).tolist()
                       for _ in range(n)] for n in lengths]
  if align:
    cols[schema.TEXT_COLUMN] = [json.dumps([{"role": "user", "content": QUESTIONS[language]},
                                            {"role": "assistant", "content": f"{i}"}], ensure_ascii=False)
                                for i in range(rows)]
    if language == "en":
      cols[schema.TASK_COLUMN] = ["MF"] * rows
  return cols


@pytest.mark.parametrize("align", [False, True])
def test_write_then_read_is_identical(tmp_path, align):
  rng = np.random.default_rng(0)
  cols = random_columns(rng, 37, align)
  path = str(tmp_path / schema.file_name("align" if align else "pretrain", "train"))
  assert arrow_io.write_sequences(path, cols, batch_rows=10) == 37  # several record batches
  f = arrow_io.SequenceFile(path)
  assert len(f) == 37
  for r in range(37):
    for c in schema.FEATURE_COLUMNS:
      assert f.bags(r, c).to_lists() == cols[c][r]
    if align:
      assert f.text(r) == cols[schema.TEXT_COLUMN][r]
  # The file is readable by plain pyarrow with exactly the official types.
  table = pa.ipc.open_file(path).read_all()
  assert table.schema.field("uni_seq_title_bpe_token_ids").type == pa.list_(pa.list_(pa.int64()))
  assert table.column(schema.ITEM_COLUMN).to_pylist() == cols[schema.ITEM_COLUMN]


def test_out_of_range_row_names_the_file(tmp_path):
  path = str(tmp_path / "pretrain_data_eval.arrow")
  arrow_io.write_sequences(path, random_columns(np.random.default_rng(1), 3))
  with pytest.raises(IndexError, match="pretrain_data_eval.arrow: row 3 out of range"):
    arrow_io.SequenceFile(path).bags(3, schema.ITEM_COLUMN)


def test_failed_write_leaves_no_file(tmp_path):
  path = str(tmp_path / "pretrain_data_train.arrow")
  cols = random_columns(np.random.default_rng(2), 5)
  cols[schema.ITEM_COLUMN][4] = "not a list"
  with pytest.raises(Exception):
    arrow_io.write_sequences(path, cols)
  assert os.listdir(tmp_path) == []


def test_dataset_info_errors_name_the_key(tmp_path):
  with pytest.raises(arrow_io.DataFileError, match="dataset_info.json: missing"):
    arrow_io.read_dataset_info(str(tmp_path))
  (tmp_path / "dataset_info.json").write_text('{"name": "x"}')
  with pytest.raises(arrow_io.DataFileError, match="missing keys"):
    arrow_io.read_dataset_info(str(tmp_path))


def with_times(cols, rng):
  """Adds valid (non-decreasing, one per step) click times to `random_columns` output."""
  cols[schema.TIME_COLUMN] = [np.cumsum(rng.integers(0, 1000, size=len(row))).tolist()
                              for row in cols[schema.ITEM_COLUMN]]
  return cols


def test_timestamps_round_trip_and_are_optional(tmp_path):
  rng = np.random.default_rng(1)
  cols = with_times(random_columns(rng, 23, align=True), rng)
  path = str(tmp_path / "align_data_train.arrow")
  arrow_io.write_sequences(path, cols, batch_rows=10)
  f = arrow_io.SequenceFile(path)
  assert f.has_time
  for r in range(23):
    assert f.timestamps(r).tolist() == cols[schema.TIME_COLUMN][r]
    assert f.row(r)[schema.TIME_COLUMN].tolist() == cols[schema.TIME_COLUMN][r]
  assert pa.ipc.open_file(path).schema.field(schema.TIME_COLUMN).type == pa.list_(pa.int64())
  plain = str(tmp_path / "pretrain_data_train.arrow")
  arrow_io.write_sequences(plain, random_columns(rng, 5))
  g = arrow_io.SequenceFile(plain)
  assert not g.has_time and g.timestamps(0) is None and schema.TIME_COLUMN not in g.row(0)
