"""Retrieval metrics for next-item prediction over the full item set.

Protocol: the query is the state at the last valid step of an eval sequence without its last
item; the target is that last item; every item id >= 1 is a candidate (nothing excluded,
history included). rank = number of candidates scoring strictly higher than the target.
Recall@k = P(rank < k); NDCG@k = E[1 / log2(rank + 2) if rank < k].
"""

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.data import arrow_io

KS = (1, 5, 10, 20, 50)


def target_ranks(queries_NxE, targets_N, table_VxE, chunk: int = 8192):
  """Rank of each target among items 1..V-1, computed chunk by chunk (no [N, V] array)."""
  v = table_VxE.shape[0]
  chunk = min(chunk, v)
  num_chunks = -(-v // chunk)
  table = jnp.pad(table_VxE, ((0, num_chunks * chunk - v), (0, 0)))
  q = queries_NxE.astype(jnp.float32)
  target_score_N = jnp.sum(q * table_VxE[targets_N].astype(jnp.float32), -1)

  def count_higher(i, rank_N):  # a loop, not unrolled: compile time stays flat in V
    rows_CxE = jax.lax.dynamic_slice_in_dim(table, i * chunk, chunk).astype(jnp.float32)
    ids_C = i * chunk + jnp.arange(chunk)
    # The target itself is excluded by id: its matmul score may differ from the dot in the last ulp.
    candidate_NxC = (ids_C > 0) & (ids_C < v) & (ids_C[None, :] != targets_N[:, None])
    higher_NxC = (q @ rows_CxE.T > target_score_N[:, None]) & candidate_NxC
    return rank_N + higher_NxC.sum(-1).astype(jnp.int32)

  return jax.lax.fori_loop(0, num_chunks, count_higher, jnp.zeros(targets_N.shape, jnp.int32))


def popularity_ranks(item_counts_V, targets_N):
  """Ranks under the popularity baseline (score = training click count)."""
  counts = np.asarray(item_counts_V, dtype=np.float64)
  candidates = np.sort(counts[1:])  # id 0 is padding, never a candidate
  target_counts = counts[np.asarray(targets_N, dtype=np.int64)]
  # Items scoring strictly higher, by binary search: no [N, V] comparison for a 1M-item catalogue.
  return candidates.size - np.searchsorted(candidates, target_counts, side="right")


def popularity_baseline(train_path: str, eval_path: str, num_items: int) -> dict[str, float]:
  """Retrieval metrics when every eval sequence's last item is ranked by training click count."""
  counts_V = sum(np.bincount(items, minlength=num_items) for _, items in arrow_io.item_sequences(train_path))
  targets = []
  for offsets, items in arrow_io.item_sequences(eval_path):
    long_enough = np.diff(offsets) >= 2  # the same rows the model is evaluated on
    targets.append(items[offsets[1:][long_enough] - 1])
  return retrieval_metrics(popularity_ranks(counts_V, np.concatenate(targets)))


def retrieval_metrics(ranks_N, ks=KS) -> dict[str, float]:
  ranks = np.asarray(ranks_N)
  out = {}
  for k in ks:
    hit = ranks < k
    out[f"recall@{k}"] = float(hit.mean()) if ranks.size else 0.0
    out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if ranks.size else 0.0
  return out
