"""Retrieval metrics for next-item prediction over the full item set.

Protocol: the query is the state at the last valid step of an eval sequence without its last
item; the target is that last item; every item id >= 1 is a candidate (nothing excluded,
history included). rank = number of other candidates scoring at least as high as the target:
ties count against the model, so a collapsed model (every score equal) ranks last, not first.
Recall@k = P(rank < k); NDCG@k = E[1 / log2(rank + 2) if rank < k]. A non-finite score (NaN or
inf in a query, the target or any candidate) makes that query's rank -1, and
`retrieval_metrics` refuses ranks below 0.
"""

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.data import arrow_io
from uqa_jax.encoders import nip_loss

KS = (1, 5, 10, 20, 50)


def target_ranks(queries_NxE, targets_N, table_VxE, chunk: int = 0):
  """Rank of each target among items 1..V-1, computed chunk by chunk (no [N, V] array).

  `chunk` items per step (0: `nip_loss.default_chunk(N)`, per platform).
  Two passes over the table with the same chunked matmul (float32, highest precision): the
  first reads each target's own score out of it, the second counts the other items scoring at
  least as high. Comparing against a separately computed dot product instead would let rounding
  in the last bit break ties in the model's favour. -1 marks a query with any non-finite score.
  """
  v = table_VxE.shape[0]
  chunk = min(chunk or nip_loss.default_chunk(queries_NxE.shape[0]), v)
  num_chunks = -(-v // chunk)
  table = jnp.pad(table_VxE, ((0, num_chunks * chunk - v), (0, 0)))
  q = queries_NxE.astype(jnp.float32)

  def scores(i):
    rows_CxE = jax.lax.dynamic_slice_in_dim(table, i * chunk, chunk).astype(jnp.float32)
    ids_C = i * chunk + jnp.arange(chunk)
    return jnp.matmul(q, rows_CxE.T, precision=jax.lax.Precision.HIGHEST), ids_C

  def read_target(i, target_score_N):  # loops, not unrolled: compile time stays flat in V
    scores_NxC, ids_C = scores(i)
    is_target = ids_C[None, :] == targets_N[:, None]
    return target_score_N + jnp.where(is_target, scores_NxC, 0.0).sum(-1)

  def count_at_least(i, carry):
    rank_N, finite_N = carry
    scores_NxC, ids_C = scores(i)
    candidate_NxC = (ids_C > 0) & (ids_C < v) & (ids_C[None, :] != targets_N[:, None])
    at_least_NxC = (scores_NxC >= target_score_N[:, None]) & candidate_NxC
    finite_N &= jnp.all(jnp.isfinite(scores_NxC) | ~candidate_NxC, axis=-1)
    return rank_N + at_least_NxC.sum(-1).astype(jnp.int32), finite_N

  target_score_N = jax.lax.fori_loop(0, num_chunks, read_target, jnp.zeros(targets_N.shape, jnp.float32))
  init = (jnp.zeros(targets_N.shape, jnp.int32), jnp.isfinite(target_score_N))
  rank_N, finite_N = jax.lax.fori_loop(0, num_chunks, count_at_least, init)
  return jnp.where(finite_N, rank_N, -1)


def popularity_ranks(item_counts_V, targets_N):
  """Ranks under the popularity baseline (score = training click count), ties against it."""
  counts = np.asarray(item_counts_V, dtype=np.float64)
  candidates = np.sort(counts[1:])  # id 0 is padding, never a candidate
  target_counts = counts[np.asarray(targets_N, dtype=np.int64)]
  # Other items counted at least as often, by binary search: no [N, V] comparison for a
  # 1M-item catalogue (the target itself is one of those at or above its own count).
  return candidates.size - np.searchsorted(candidates, target_counts, side="left") - 1


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
  bad = int((ranks < 0).sum())
  if bad:
    raise FloatingPointError(f"retrieval metrics: {bad} of {ranks.size} queries have non-finite "
                             f"scores (NaN or inf in the query, the target or a candidate)")
  out = {}
  for k in ks:
    hit = ranks < k
    out[f"recall@{k}"] = float(hit.mean()) if ranks.size else 0.0
    out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if ranks.size else 0.0
  return out
