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


def _weighted_mean(losses_N, weights_N):
  return jnp.sum(losses_N * weights_N) / jnp.maximum(jnp.sum(weights_N), 1.0)


def sl_loss_naive(queries_NxE, targets_N, weights_N, table_VxE):
  logits_NxV = queries_NxE @ table_VxE.T
  logits_NxV = logits_NxV.at[:, 0].set(-jnp.inf)
  logp = jax.nn.log_softmax(logits_NxV, axis=-1)
  return _weighted_mean(-jnp.take_along_axis(logp, targets_N[:, None], axis=-1)[:, 0], weights_N)


def sl_loss(queries_NxE, targets_N, weights_N, table_VxE, chunk: int = 8192):
  v = table_VxE.shape[0]
  chunk = min(chunk, v)
  num_chunks = -(-v // chunk)
  table = jnp.pad(table_VxE, ((0, num_chunks * chunk - v), (0, 0)))
  q = queries_NxE.astype(jnp.float32)

  @jax.checkpoint
  def body(carry, i):
    m_N, s_N = carry
    rows_CxE = jax.lax.dynamic_slice_in_dim(table, i * chunk, chunk).astype(jnp.float32)
    ids_C = i * chunk + jnp.arange(chunk)
    logits_NxC = jnp.where((ids_C > 0) & (ids_C < v), q @ rows_CxE.T, -jnp.inf)
    m_new = jnp.maximum(m_N, logits_NxC.max(-1))
    s_N = s_N * jnp.exp(m_N - m_new) + jnp.exp(logits_NxC - m_new[:, None]).sum(-1)
    return (m_new, s_N), None

  init = (jnp.full(q.shape[:1], -jnp.inf), jnp.zeros(q.shape[:1]))
  (m_N, s_N), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  target_logit_N = jnp.sum(q * table_VxE[targets_N].astype(jnp.float32), -1)
  return _weighted_mean(m_N + jnp.log(s_N) - target_logit_N, weights_N)


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
