"""Next-item prediction losses against the (tied) item-id embedding table.

Shape letters: N query positions (B·L flattened), E item embedding width, V items, C chunk,
S sampled negatives. Item id 0 is padding: never a target and never a candidate.

`sl`: cross-entropy over all items. `sl_loss` streams the table in chunks with an online
log-sum-exp and `jax.checkpoint` on each chunk, so neither the forward nor the backward pass
materialises [N, V]; `sl_loss_naive` is the full-softmax reference.
`cl`: InfoNCE on L2-normalised vectors with in-batch negatives plus uniformly sampled ones;
`cl_loss` streams the in-batch logits the same way ([N, C], never [N, N]); `cl_loss_naive` is
the full-matrix reference.
"""

import jax
import jax.numpy as jnp

from uqa_jax import parallel


def _weighted_mean(losses_N, weights_N):
  return jnp.sum(losses_N * weights_N) / jnp.maximum(jnp.sum(weights_N), 1.0)


def sl_loss_naive(queries_NxE, targets_N, weights_N, table_VxE):
  logits_NxV = queries_NxE @ table_VxE.T
  logits_NxV = logits_NxV.at[:, 0].set(-jnp.inf)
  logp = jax.nn.log_softmax(logits_NxV, axis=-1)
  return _weighted_mean(-jnp.take_along_axis(logp, targets_N[:, None], axis=-1)[:, 0], weights_N)


def sl_loss(queries_NxE, targets_N, weights_N, table_VxE, chunk: int = 8192, num_items: int | None = None):
  """Full-softmax cross-entropy over items 1..num_items-1, streamed over the table in chunks.

  Rows of `table_VxE` from `num_items` on are padding (the model allocates rows in multiples of
  128) and are never candidates. Under a mesh whose rules shard `items` over S devices the table
  is read as [S, V/S, E], and each chunk takes C rows from every shard at once: each device
  streams its own rows, and only [N]-sized partial log-sum-exps cross devices; no row of the
  table moves (tests/test_nip_loss.py checks the compiled program). The target's logit is read
  from the same chunks, so no gather from the sharded table either.
  """
  v_rows, e = table_VxE.shape
  v = v_rows if num_items is None else num_items
  shards = parallel.shards("items")
  if v_rows % shards:
    raise ValueError(f"sl_loss: the item table's {v_rows} rows do not split over the {shards} devices the "
                     f"rules shard `items` over; use a power-of-two split (rows are padded to a multiple of 128)")
  per_shard = v_rows // shards
  # Every device scores all N queries against its own rows (the queries move, the table does
  # not), so a chunk takes chunk / S rows of each shard: per device, [N, chunk / S] logits, the
  # size an unsharded batch slice of N / S queries against `chunk` rows would have.
  chunk = max(1, min(chunk // shards, per_shard))
  num_chunks = -(-per_shard // chunk)
  table_SxRxE = parallel.constrain(table_VxE.reshape(shards, per_shard, e), ("items", None, "feature_embed"))
  table_SxRxE = jnp.pad(table_SxRxE, ((0, 0), (0, num_chunks * chunk - per_shard), (0, 0)))
  q = queries_NxE.astype(jnp.float32)
  first_S1 = jnp.arange(shards)[:, None] * per_shard  # each shard's first item id

  @jax.checkpoint
  def body(carry, i):
    m_N, s_N, own_N = carry
    rows_SxCxE = jax.lax.dynamic_slice_in_dim(table_SxRxE, i * chunk, chunk, axis=1).astype(jnp.float32)
    local_C = i * chunk + jnp.arange(chunk)
    ids_SxC = first_S1 + local_C[None, :]
    scores_NxSxC = jnp.einsum("ne,sce->nsc", q, rows_SxCxE)
    keep_SxC = (local_C[None, :] < per_shard) & (ids_SxC > 0) & (ids_SxC < v)
    logits_NxSxC = jnp.where(keep_SxC[None], scores_NxSxC, -jnp.inf)
    m_new = jnp.maximum(m_N, logits_NxSxC.max((1, 2)))
    s_N = s_N * jnp.exp(m_N - m_new) + jnp.exp(logits_NxSxC - m_new[:, None, None]).sum((1, 2))
    is_target = ids_SxC[None] == targets_N[:, None, None]
    own_N = own_N + jnp.where(is_target, scores_NxSxC, 0.0).sum((1, 2))
    return (m_new, s_N, own_N), None

  n = q.shape[0]
  init = (jnp.full((n,), -jnp.inf), jnp.zeros((n,)), jnp.zeros((n,)))
  (m_N, s_N, own_N), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return _weighted_mean(m_N + jnp.log(s_N) - own_N, weights_N)


def _cl_parts(queries_NxE, targets_N, table_VxE, key, num_negatives, temperature):
  """Normalised queries and positives, and the sampled negatives' logits [N, S] (own target masked)."""
  normalize = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  q = normalize(queries_NxE.astype(jnp.float32))
  pos_NxE = normalize(table_VxE[targets_N].astype(jnp.float32))
  sampled_S = jax.random.randint(key, (num_negatives,), 1, table_VxE.shape[0])
  neg_SxE = normalize(table_VxE[sampled_S].astype(jnp.float32))
  sampled_NxS = jnp.where(sampled_S[None, :] == targets_N[:, None], -jnp.inf, q @ neg_SxE.T)
  return q, pos_NxE, sampled_NxS / temperature


def cl_loss_naive(queries_NxE, targets_N, weights_N, table_VxE, key, *, num_negatives: int = 128,
                  temperature: float = 0.07):
  """InfoNCE with the full [N, N] in-batch matrix: the reference `cl_loss` must equal."""
  q, pos_NxE, sampled_NxS = _cl_parts(queries_NxE, targets_N, table_VxE, key, num_negatives,
                                      temperature)
  in_batch_NxN = q @ pos_NxE.T
  # Another position's target is a negative unless it is the same item or a padding position.
  off_diagonal = ~jnp.eye(targets_N.shape[0], dtype=bool)
  not_negative = ((targets_N[:, None] == targets_N[None, :]) | (weights_N[None, :] == 0)) & off_diagonal
  in_batch_NxN = jnp.where(not_negative, -jnp.inf, in_batch_NxN)
  logits = jnp.concatenate([in_batch_NxN / temperature, sampled_NxS], axis=1)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return _weighted_mean(-jnp.diagonal(logp[:, : targets_N.shape[0]]), weights_N)


def cl_loss(queries_NxE, targets_N, weights_N, table_VxE, key, *, num_negatives: int = 128,
            temperature: float = 0.07, chunk: int = 8192):
  """InfoNCE: the target item against in-batch targets of other positions and sampled items.

  The in-batch logits are streamed over chunks of C positions with an online log-sum-exp and
  `jax.checkpoint`, so memory is [N, C] like `sl_loss`, never [N, N] (N = B·L = 131,072 at
  the paper's recipe would be a 69 GB matrix).
  """
  q, pos_NxE, sampled_NxS = _cl_parts(queries_NxE, targets_N, table_VxE, key, num_negatives,
                                      temperature)
  n = targets_N.shape[0]
  chunk = min(chunk, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  pos = jnp.pad(pos_NxE, ((0, pad), (0, 0)))
  targets = jnp.pad(targets_N, (0, pad))
  weights = jnp.pad(weights_N, (0, pad))
  rows_N = jnp.arange(n)
  positive_N = jnp.sum(q * pos_NxE, -1) / temperature  # ~the diagonal: a finite start for the max

  @jax.checkpoint
  def body(carry, i):
    m_N, s_N, own_N = carry
    cols_C = i * chunk + jnp.arange(chunk)
    pos_CxE = jax.lax.dynamic_slice_in_dim(pos, i * chunk, chunk)
    tgt_C = jax.lax.dynamic_slice_in_dim(targets, i * chunk, chunk)
    w_C = jax.lax.dynamic_slice_in_dim(weights, i * chunk, chunk)
    is_self = cols_C[None, :] == rows_N[:, None]
    negative = (tgt_C[None, :] != targets_N[:, None]) & (w_C[None, :] != 0)
    keep = (cols_C[None, :] < n) & (is_self | negative)
    logits_NxC = jnp.where(keep, q @ pos_CxE.T / temperature, -jnp.inf)
    m_new = jnp.maximum(m_N, logits_NxC.max(-1))
    s_N = s_N * jnp.exp(m_N - m_new) + jnp.exp(logits_NxC - m_new[:, None]).sum(-1)
    own_N = own_N + jnp.where(is_self, logits_NxC, 0.0).sum(-1)  # the positive, as the softmax saw it
    return (m_new, s_N, own_N), None

  m0 = jnp.maximum(positive_N, sampled_NxS.max(-1))  # finite: the positive is always present
  s0 = jnp.exp(sampled_NxS - m0[:, None]).sum(-1)
  (m_N, s_N, own_N), _ = jax.lax.scan(body, (m0, s0, jnp.zeros_like(m0)), jnp.arange(num_chunks))
  return _weighted_mean(m_N + jnp.log(s_N) - own_N, weights_N)


def shifted_targets(item_ids_BxL, lengths_B):
  """Targets and weights for NIP: position t predicts item t+1; padding and the last step get weight 0."""
  targets_BxL = jnp.pad(item_ids_BxL[:, 1:], ((0, 0), (0, 1)))
  weights_BxL = (jnp.arange(item_ids_BxL.shape[1])[None, :] < (lengths_B[:, None] - 1)).astype(jnp.float32)
  return targets_BxL, weights_BxL
