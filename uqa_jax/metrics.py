"""Retrieval metrics for next-item prediction over the full item set.

Protocol: the query is the state at the last valid step of an eval sequence without its last
item; the target is that last item; every item id >= 1 is a candidate (nothing excluded,
history included). rank = number of candidates scoring strictly higher than the target.
Recall@k = P(rank < k); NDCG@k = E[1 / log2(rank + 2) if rank < k].
"""

import jax
import jax.numpy as jnp
import numpy as np

KS = (1, 5, 10, 20, 50)


def target_ranks(queries_NxE, targets_N, table_VxE, chunk: int = 8192):
  """Rank of each target among items 1..V-1, computed chunk by chunk (no [N, V] array)."""
  v = table_VxE.shape[0]
  q = queries_NxE.astype(jnp.float32)
  target_score_N = jnp.sum(q * table_VxE[targets_N].astype(jnp.float32), -1)
  rank_N = jnp.zeros(targets_N.shape, jnp.int32)
  for start in range(0, v, chunk):
    rows = table_VxE[start:start + chunk].astype(jnp.float32)
    ids = start + jnp.arange(rows.shape[0])
    # The target itself is excluded by id: its matmul score may differ from the dot in the last ulp.
    higher = (q @ rows.T > target_score_N[:, None]) & (ids[None, :] > 0) & (ids[None, :] != targets_N[:, None])
    rank_N = rank_N + higher.sum(-1).astype(jnp.int32)
  return rank_N


def popularity_ranks(item_counts_V, targets_N):
  """Ranks under the popularity baseline (score = training click count)."""
  counts = np.asarray(item_counts_V, dtype=np.float64).copy()
  counts[0] = -np.inf
  return (counts[None, :] > counts[np.asarray(targets_N)][:, None]).sum(-1)


def retrieval_metrics(ranks_N, ks=KS) -> dict[str, float]:
  ranks = np.asarray(ranks_N)
  out = {}
  for k in ks:
    hit = ranks < k
    out[f"recall@{k}"] = float(hit.mean()) if ranks.size else 0.0
    out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if ranks.size else 0.0
  return out
