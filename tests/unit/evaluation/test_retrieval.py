"""Retrieval metrics against brute force."""

import jax
import numpy as np
import pytest

from uqa_jax.evaluation import retrieval


def test_chunked_ranks_equal_a_full_sort():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  q = jax.random.normal(k1, (40, 6))
  table = jax.random.normal(k2, (300, 6))
  targets = np.arange(1, 41)
  ranks = np.asarray(retrieval.target_ranks(q, targets, table, chunk=64))
  scores = np.array(q @ table.T)
  scores[:, 0] = -np.inf
  want = [(np.delete(scores[i], t) >= scores[i, t]).sum() for i, t in enumerate(targets)]
  np.testing.assert_array_equal(ranks, want)


def test_ties_count_against_the_model():
  """A collapsed model (every score equal) ranks every target last, so Recall@1 is 0, not 1."""
  table = np.ones((50, 4), np.float32)
  ranks = np.asarray(retrieval.target_ranks(np.ones((3, 4)), np.array([1, 7, 49]), table, chunk=16))
  np.testing.assert_array_equal(ranks, [48, 48, 48])  # 49 candidates, all tied: 48 others >=
  assert retrieval.retrieval_metrics(ranks)["recall@1"] == 0.0
  # Equal rows of random values: the target's score must come from the same matmul as the
  # others', or last-bit rounding breaks the tie in the model's favour.
  rng = np.random.default_rng(0)
  for _ in range(20):
    row = rng.normal(size=(1, 16)).astype(np.float32)
    table = np.repeat(row, 50, axis=0)
    ranks = np.asarray(retrieval.target_ranks(rng.normal(size=(3, 16)).astype(np.float32),
                                            np.array([1, 20, 49]), table, chunk=16))
    np.testing.assert_array_equal(ranks, [48, 48, 48])


def test_non_finite_scores_raise():
  table = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
  q = np.ones((3, 4), np.float32)
  q[1, 2] = np.nan
  table_inf = table.copy()
  table_inf[17, 0] = np.inf
  ranks = np.asarray(retrieval.target_ranks(q, np.array([1, 2, 3]), table, chunk=8))
  assert ranks[1] == -1 and ranks[0] >= 0 and ranks[2] >= 0
  assert (np.asarray(retrieval.target_ranks(np.ones((2, 4)), np.array([1, 2]), table_inf, chunk=8)) == -1).all()
  with pytest.raises(FloatingPointError, match="1 of 3 queries have non-finite scores"):
    retrieval.retrieval_metrics(ranks)


def test_recall_and_ndcg_values():
  m = retrieval.retrieval_metrics(np.array([0, 1, 9, 10, 100]), ks=(1, 10))
  assert m["recall@1"] == 0.2 and m["recall@10"] == 0.6
  np.testing.assert_allclose(m["ndcg@10"], (1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)


def test_popularity_baseline_ranks_by_count():
  counts = np.array([99, 5, 50, 7, 50])  # id 0 is padding and never ranked; 2 and 4 tie
  np.testing.assert_array_equal(retrieval.popularity_ranks(counts, [2, 3, 1, 4]), [1, 2, 3, 1])


def test_popularity_baseline_equals_counting_row_by_row(en_dir):
  """Counts and targets read zero-copy per record batch == a plain loop over rows."""
  import os
  from uqa_jax.data import arrow_io
  train = arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_train.arrow"))
  evalf = arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_eval.arrow"))
  vocab = arrow_io.read_dataset_info(en_dir)["vocab_sizes"]["item"]
  counts = np.zeros(vocab, np.int64)
  for r in range(len(train)):
    for item in train.bags(r, "uni_seq_item_id").ids:
      counts[item] += 1
  ranks = []
  for r in range(len(evalf)):
    items = evalf.bags(r, "uni_seq_item_id").ids
    if len(items) >= 2:
      ranks.append(sum(counts[i] >= counts[items[-1]] for i in range(1, vocab) if i != items[-1]))
  got = retrieval.popularity_baseline(train.path, evalf.path, vocab)
  assert got == retrieval.retrieval_metrics(np.array(ranks))
