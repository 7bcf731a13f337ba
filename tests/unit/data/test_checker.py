"""The checker catches each kind of bad input and names file, row and column."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import schema
from tests.unit.data.test_arrow_io import random_columns
from tests.unit.data.test_arrow_io import with_times

VOCAB = {t: 50 for t in schema.TABLES}


def make_valid(directory, rows=12, language="en", info=True):
  rng = np.random.default_rng(0)
  for name in schema.ALL_FILES:
    arrow_io.write_sequences(os.path.join(directory, name),
                             random_columns(rng, rows, name.startswith("align"), language))
  if info:
    arrow_io.write_dataset_info(directory, {
        "name": "t", "source": "synthetic", "language": language, "tokenizer": "t",
        "vocab_sizes": VOCAB, "max_len": 30, "counts": {}})


def rewrite(path, mutate):
  """Reads a file as Python lists, lets `mutate(columns)` damage it, writes it back."""
  table = pa.ipc.open_file(str(path)).read_all()
  cols = {c: table.column(c).to_pylist() for c in table.column_names}
  mutate(cols)
  with pa.OSFile(str(path), "wb") as sink:
    arrays = {c: pa.array(v) if not isinstance(v, pa.Array) else v for c, v in cols.items()}
    t = pa.table(arrays)
    with pa.ipc.new_file(sink, t.schema) as w:
      w.write_table(t)


@pytest.fixture
def valid_dir(tmp_path):
  make_valid(str(tmp_path))
  return tmp_path


def problems(directory):
  return checker.check_directory(str(directory)).problems


def test_valid_directory_has_no_problems(valid_dir):
  assert problems(valid_dir) == []


def test_missing_column(valid_dir):
  rewrite(valid_dir / "pretrain_data_train.arrow", lambda c: c.pop("uni_seq_shop_id"))
  (p,) = problems(valid_dir)
  assert "pretrain_data_train.arrow" in str(p) and "'uni_seq_shop_id': missing" in str(p)


def test_wrong_type(valid_dir):
  def flatten(c):
    c["uni_seq_brand_id"] = pa.array([[b[0] if b else 0 for b in row] for row in c["uni_seq_brand_id"]],
                                     type=pa.list_(pa.int32()))
  rewrite(valid_dir / "pretrain_data_eval.arrow", flatten)
  (p,) = problems(valid_dir)
  assert "'uni_seq_brand_id'" in str(p) and "expected list<item: list<item: int64>>" in str(p)


def test_id_out_of_vocab_names_row_and_column(valid_dir):
  def bad(c):
    c["uni_seq_title_bpe_token_ids"][7][0] = [1, 50]
  rewrite(valid_dir / "pretrain_data_train.arrow", bad)
  (p,) = problems(valid_dir)
  assert (p.row, p.column) == (7, "uni_seq_title_bpe_token_ids")
  assert "50 not in [0, 50)" in p.message


def test_padding_id_inside_item_sequence(valid_dir):
  def bad(c):
    c[schema.ITEM_COLUMN][2][0] = [0]
  rewrite(valid_dir / "pretrain_data_train.arrow", bad)
  (p,) = problems(valid_dir)
  assert (p.row, p.column) == (2, schema.ITEM_COLUMN) and "not in [1, 50)" in p.message


def test_empty_and_overlong_sequences(valid_dir):
  def bad(c):
    for col in schema.FEATURE_COLUMNS:
      c[col][3] = []
      c[col][5] = [[1]] * 31
  rewrite(valid_dir / "pretrain_data_eval.arrow", bad)
  found = {(p.row, p.message.split(":")[0]) for p in problems(valid_dir)}
  assert found == {(3, "empty sequence"), (5, "over-long sequence")}


def test_step_count_mismatch(valid_dir):
  def bad(c):
    c["uni_seq_cate_id"][4] = c["uni_seq_cate_id"][4] + [[1]]
  rewrite(valid_dir / "pretrain_data_eval.arrow", bad)
  (p,) = problems(valid_dir)
  assert (p.row, p.column) == (4, "uni_seq_cate_id") and "step count mismatch" in p.message


@pytest.mark.parametrize("times,why", [
    ([10, 20], "step count mismatch"),
    ([10, 30, 20], "decreasing time"),
    ([-1, 20, 30], "negative time"),
])
def test_bad_timestamps_name_row_and_column(tmp_path, times, why):
  rng = np.random.default_rng(0)
  make_valid(str(tmp_path))
  cols = with_times(random_columns(rng, 12), rng)
  for c in schema.FEATURE_COLUMNS:
    cols[c][6] = cols[c][6][:1] * 3  # row 6: three steps
  cols[schema.TIME_COLUMN][6] = times
  arrow_io.write_sequences(str(tmp_path / "pretrain_data_train.arrow"), cols)
  (p,) = problems(tmp_path)
  assert (p.row, p.column) == (6, schema.TIME_COLUMN) and why in p.message


def test_valid_timestamps_pass(tmp_path):
  rng = np.random.default_rng(0)
  make_valid(str(tmp_path))
  arrow_io.write_sequences(str(tmp_path / "pretrain_data_eval.arrow"), with_times(random_columns(rng, 30), rng))
  assert problems(tmp_path) == []


@pytest.mark.parametrize("text,why", [
    ("{not json", "not JSON"),
    ('{"role": "user"}', "expected a list"),
    ('[{"role":"assistant","content":"a"},{"role":"user","content":"q"}]', "roles"),
])
def test_malformed_chat_json(valid_dir, text, why):
  def bad(c):
    c["text"][9] = text
  rewrite(valid_dir / "align_data_eval.arrow", bad)
  (p,) = problems(valid_dir)
  assert (p.file.endswith("align_data_eval.arrow"), p.row, p.column) == (True, 9, "text")
  assert why in p.message


def test_truncated_file(valid_dir):
  path = valid_dir / "align_data_train.arrow"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  (p,) = problems(valid_dir)
  assert p.file.endswith("align_data_train.arrow") and "unreadable" in p.message


def test_missing_file(valid_dir):
  os.remove(valid_dir / "align_data_eval.arrow")
  (p,) = problems(valid_dir)
  assert p.file.endswith("align_data_eval.arrow") and "missing" in p.message


def test_zh_task_label_contradicting_the_official_rule(tmp_path):
  make_valid(str(tmp_path), language="zh")
  def bad(c):
    c["text"] = [json.dumps([{"role": "user", "content": "用户近期最感兴趣的类目是什么？"},
                             {"role": "assistant", "content": "x"}], ensure_ascii=False)] * len(c["text"])
    c["task"] = ["SI"] * len(c["text"])
    c["task"][1] = "LI"
  rewrite(tmp_path / "align_data_train.arrow", bad)
  rewrite(tmp_path / "align_data_eval.arrow", bad)
  rows = sorted((os.path.basename(p.file), p.row) for p in problems(tmp_path))
  assert rows == [("align_data_eval.arrow", 1), ("align_data_train.arrow", 1)]


def _set_row(row, *, question=None, answer=None, task=None):
  def bad(c):
    user, assistant = json.loads(c["text"][row])
    if question is not None:
      user["content"] = question
    if answer is not None:
      assistant["content"] = answer
    c["text"][row] = json.dumps([user, assistant])
    if task is not None:
      c["task"][row] = task
  return bad


@pytest.mark.parametrize("change,column,why", [
    (dict(answer=""), "text", "empty gold answer"),
    (dict(answer="   "), "text", "empty gold answer"),
    (dict(task="XX"), "task", "unknown task label 'XX'"),
    (dict(question="What is the weather like?"), "task", "unclassifiable"),
    (dict(question="How long is the user's click history?", task="SI"), "task", "task mismatch"),
])
def test_each_bad_label_or_answer_names_its_row(valid_dir, change, column, why):
  """Nothing maps to a default task or scores by an empty gold: each case is an error at its row."""
  rewrite(valid_dir / "align_data_eval.arrow", _set_row(5, **change))
  (p,) = problems(valid_dir)
  assert (p.file.endswith("align_data_eval.arrow"), p.row, p.column) == (True, 5, column)
  assert why in p.message, p.message


def test_official_rows_without_labels_must_be_classifiable(tmp_path):
  """Official files carry no task column: a question no rule classifies is an error at its row."""
  make_valid(str(tmp_path), language="zh")
  def bad(c):
    assert "task" not in c  # zh rows, like the official files, carry no label
    c["text"][3] = json.dumps([{"role": "user", "content": "今天天气怎么样？"},
                               {"role": "assistant", "content": "晴"}], ensure_ascii=False)
  rewrite(tmp_path / "align_data_train.arrow", bad)
  (p,) = problems(tmp_path)
  assert (os.path.basename(p.file), p.row, p.column) == ("align_data_train.arrow", 3, "text")
  assert "unclassifiable" in p.message


def test_row_counts_must_match_dataset_info_and_no_split_may_be_empty(tmp_path):
  make_valid(str(tmp_path))
  info = arrow_io.read_dataset_info(str(tmp_path))
  arrow_io.write_dataset_info(str(tmp_path), {**info, "counts": {name: 12 for name in schema.ALL_FILES}})
  assert problems(tmp_path) == []
  rewrite(tmp_path / "align_data_eval.arrow", lambda c: c.update({k: v[:5] for k, v in c.items()}))
  (p,) = problems(tmp_path)
  assert "align_data_eval.arrow" in str(p) and "5 rows, dataset_info.json says 12" in str(p)
  arrow_io.write_sequences(str(tmp_path / "pretrain_data_eval.arrow"),
                           random_columns(np.random.default_rng(1), 0, False, "en"))
  found = [str(p) for p in problems(tmp_path)]
  assert any("pretrain_data_eval.arrow" in p and "empty: no rows" in p for p in found), found
