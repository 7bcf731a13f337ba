"""MovieLens-100k from the recbole wheel imports into a data set the checker accepts."""

import json
import os

import numpy as np
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.data import pipeline
from uqa_jax.data import schema


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory, tokenizer):
  out = str(tmp_path_factory.mktemp("ml100k"))
  movielens.build_dataset(out, tokenizer, "smollm2", log=lambda *_: None)
  return out


def test_import_passes_the_checker(ml_dir):
  report = checker.check_directory(ml_dir)
  assert report.ok, report.format()
  info = arrow_io.read_dataset_info(ml_dir)
  assert info["read_stats"]["ratings"] == 100_000 and info["read_stats"]["users"] == 943
  assert info["counts"]["pretrain_data_eval.arrow"] == info["num_users"] > 900
  assert {k.split("/")[1] for k in info["qa_per_task"]} == set(schema.TASKS)


def test_genres_are_bags_and_missing_fields_are_empty(ml_dir):
  f = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  genres = [len(b) for r in range(20) for b in f.bags(r, "uni_seq_cate_id").to_lists()]
  assert max(genres) > 1  # multi-genre movies
  assert all(b == [] for b in f.bags(0, "uni_seq_shop_id").to_lists())
  assert f.bags(0, "uni_seq_title_bpe_token_ids").ids.size > 0


def test_histories_are_in_time_order(ml_dir):
  """User 1's first ratings by timestamp in ml-100k.inter come first in the history."""
  catalog, histories, times, _ = movielens.load()
  inter = (movielens.ml100k_dir() / "ml-100k.inter").read_text().splitlines()[1:]
  first_user = sorted((float(l.split("\t")[3]), int(l.split("\t")[1])) for l in inter
                      if l.split("\t")[0] == "1")
  assert len(histories[0]) == len(first_user)
  np.testing.assert_array_equal(times[0], [int(t) for t, _ in first_user])
  assert all(np.all(np.diff(t) >= 0) for t in times)


def test_files_carry_the_rating_times(ml_dir):
  f = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  assert f.has_time
  for row in range(len(f)):
    t = f.timestamps(row)
    assert t.size == f.bags(row, "uni_seq_item_id").num_steps and np.all(np.diff(t) >= 0)
  assert arrow_io.read_dataset_info(ml_dir)["has_timestamps"]


def test_pipeline_runs_unchanged_on_it(ml_dir, tokenizer):
  cfg = pipeline.PipelineConfig(batch_size=16, max_len=64, num_epochs=1)
  b = next(iter(pipeline.make_dataset(os.path.join(ml_dir, "align_data_train.arrow"), cfg,
                                      tokenizer=tokenizer, process_index=0, process_count=1)))
  assert b["uni_seq_cate_id"].shape == (16, 64, 4) and b["input_ids"].shape == (16, 192)
