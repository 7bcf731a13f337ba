"""Next-item prediction losses against the (tied) item-id embedding table.

Shape letters: N query positions (B·L flattened), E item embedding width, V items, C chunk,
S sampled negatives. Item id 0 is padding: never a target and never a candidate.

`sl`: cross-entropy over all items. `sl_loss` streams the table in chunks with an online
log-sum-exp and a hand-written backward pass that streams it again, so neither pass
materialises [N, V]; `sl_loss_naive` is the full-softmax reference.
`cl`: InfoNCE on L2-normalised vectors with in-batch negatives plus uniformly sampled ones;
`cl_loss` streams the in-batch logits the same way ([N, C], never [N, N]); `cl_loss_naive` is
the full-matrix reference.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from uqa_jax.runtime import parallel


CPU_LOGITS_BLOCK = 1 << 19  # elements of one [N, C] logits block on CPU: 2 MiB of float32
ACCELERATOR_CHUNK = 8192


def default_chunk(num_queries: int) -> int:
  """Rows (or positions) per streamed chunk when the config leaves it at 0, per platform.

  On CPU, the largest power of two C >= 128 with N·C <= 2^19: each chunk's [N, C] logits then
  stay in cache between the matmul and the elementwise passes that read them. At the issue-14
  Trm++ step (N = 4096, V = 100,000) C = 128 made the loss 1.8x faster than C = 8192 (4.8 s ->
  2.7 s, forward and backward; `benchmarks/profile_step.py --sl_chunk`). On accelerators the
  per-iteration cost dominates instead: 8192.
  """
  if jax.default_backend() != "cpu":
    return ACCELERATOR_CHUNK
  return max(128, 1 << max(0, (CPU_LOGITS_BLOCK // max(num_queries, 1)).bit_length() - 1))


def _weighted_mean(losses_N, weights_N):
  return jnp.sum(losses_N * weights_N) / jnp.maximum(jnp.sum(weights_N), 1.0)


def sl_loss_naive(queries_NxE, targets_N, weights_N, table_VxE):
  logits_NxV = queries_NxE @ table_VxE.T
  logits_NxV = logits_NxV.at[:, 0].set(-jnp.inf)
  logp = jax.nn.log_softmax(logits_NxV, axis=-1)
  return _weighted_mean(-jnp.take_along_axis(logp, targets_N[:, None], axis=-1)[:, 0], weights_N)


class _Plan(NamedTuple):
  """How `sl_loss` streams the table: S shards of R rows, K chunks of C rows per shard, V items."""
  shards: int
  per_shard: int
  chunk: int
  num_chunks: int
  num_items: int


@jax.named_scope("sl_loss")  # the name profiles charge its ops to (benchmarks/profile_step.py)
def sl_loss(queries_NxE, targets_N, weights_N, table_VxE, chunk: int = 0, num_items: int | None = None):
  """Full-softmax cross-entropy over items 1..num_items-1, streamed over the table in chunks.

  `chunk` rows per step (0: `default_chunk(N)`).
  Rows of `table_VxE` from `num_items` on are padding (the model allocates rows in multiples of
  128) and are never candidates. Under a mesh whose rules shard `items` over S devices the table
  is read as [S, V/S, E], and each chunk takes C rows from every shard at once: each device
  streams its own rows, and only [N]-sized partial log-sum-exps cross devices; no row of the
  table moves (tests/unit/encoders/test_nip_loss.py checks the compiled program). The target's logit is read
  from the same chunks, so no gather from the sharded table either.

  The gradient is written by hand (`jax.custom_vjp`): the forward pass keeps only each query's
  log-sum-exp; the backward pass streams the chunks again, recomputes each chunk's logits once
  and turns them into softmax - one-hot, which gives the queries' gradient and the chunk's rows'
  gradient (stacked per chunk, not scattered into a table-sized carry). Automatic
  differentiation of the streamed forward (with `jax.checkpoint` per chunk) cost twice as much
  here: its backward fused the recomputation, the online max and the table-gradient update into
  one transposed elementwise pass that took 40% of a Trm++ step (benchmarks/profile_step.py).
  """
  v_rows, _ = table_VxE.shape
  shards = parallel.shards("items")
  if v_rows % shards:
    raise ValueError(f"sl_loss: the item table's {v_rows} rows do not split over the {shards} devices the "
                     f"rules shard `items` over; use a power-of-two split (rows are padded to a multiple of 128)")
  per_shard = v_rows // shards
  # Every device scores all N queries against its own rows (the queries move, the table does
  # not), so a chunk takes chunk / S rows of each shard: per device, [N, chunk / S] logits, the
  # size an unsharded batch slice of N / S queries against `chunk` rows would have.
  chunk = max(1, min((chunk or default_chunk(queries_NxE.shape[0])) // shards, per_shard))
  plan = _Plan(shards, per_shard, chunk, -(-per_shard // chunk), v_rows if num_items is None else num_items)
  return _sl_loss(queries_NxE, targets_N, weights_N, table_VxE, plan)


def _shard_view(table_VxE, plan: _Plan):
  """[S, K·C, E]: the table as its shards' rows, each padded to whole chunks."""
  table_SxRxE = parallel.constrain(table_VxE.reshape(plan.shards, plan.per_shard, -1),
                                   ("items", None, "feature_embed"))
  return jnp.pad(table_SxRxE, ((0, 0), (0, plan.num_chunks * plan.chunk - plan.per_shard), (0, 0)))


def _chunk_scores(q_NxE, table_SxRxE, i, plan: _Plan):
  """Chunk i: (its rows [S, C, E] in float32, their item ids [S, C], scores [N, S, C], candidates [S, C])."""
  rows_SxCxE = jax.lax.dynamic_slice_in_dim(table_SxRxE, i * plan.chunk, plan.chunk, axis=1).astype(jnp.float32)
  local_C = i * plan.chunk + jnp.arange(plan.chunk)
  ids_SxC = jnp.arange(plan.shards)[:, None] * plan.per_shard + local_C[None, :]
  scores_NxSxC = jnp.einsum("ne,sce->nsc", q_NxE, rows_SxCxE)
  keep_SxC = (local_C[None, :] < plan.per_shard) & (ids_SxC > 0) & (ids_SxC < plan.num_items)
  return rows_SxCxE, ids_SxC, scores_NxSxC, keep_SxC


def _sl_forward(queries_NxE, targets_N, weights_N, table_VxE, plan: _Plan):
  """-> (loss, per-query log-sum-exp [N], per-query loss [N])."""
  table_SxRxE = _shard_view(table_VxE, plan)
  q = queries_NxE.astype(jnp.float32)

  def body(carry, i):
    m_N, s_N, own_N = carry
    _, ids_SxC, scores_NxSxC, keep_SxC = _chunk_scores(q, table_SxRxE, i, plan)
    logits_NxSxC = jnp.where(keep_SxC[None], scores_NxSxC, -jnp.inf)
    m_new = jnp.maximum(m_N, logits_NxSxC.max((1, 2)))
    s_N = s_N * jnp.exp(m_N - m_new) + jnp.exp(logits_NxSxC - m_new[:, None, None]).sum((1, 2))
    is_target = ids_SxC[None] == targets_N[:, None, None]
    own_N = own_N + jnp.where(is_target, scores_NxSxC, 0.0).sum((1, 2))
    return (m_new, s_N, own_N), None

  n = q.shape[0]
  init = (jnp.full((n,), -jnp.inf), jnp.zeros((n,)), jnp.zeros((n,)))
  (m_N, s_N, own_N), _ = jax.lax.scan(body, init, jnp.arange(plan.num_chunks))
  lse_N = m_N + jnp.log(s_N)
  nll_N = lse_N - own_N
  return _weighted_mean(nll_N, weights_N), lse_N, nll_N


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sl_loss(queries_NxE, targets_N, weights_N, table_VxE, plan: _Plan):
  return _sl_forward(queries_NxE, targets_N, weights_N, table_VxE, plan)[0]


def _sl_loss_fwd(queries_NxE, targets_N, weights_N, table_VxE, plan):
  loss, lse_N, nll_N = _sl_forward(queries_NxE, targets_N, weights_N, table_VxE, plan)
  return loss, (queries_NxE, targets_N, weights_N, table_VxE, lse_N, nll_N, loss)


def _sl_loss_bwd(plan, residuals, g):
  queries_NxE, targets_N, weights_N, table_VxE, lse_N, nll_N, loss = residuals
  table_SxRxE = _shard_view(table_VxE, plan)
  q = queries_NxE.astype(jnp.float32)
  total = jnp.sum(weights_N)
  denom = jnp.maximum(total, 1.0)
  coef_N = g * weights_N.astype(jnp.float32) / denom  # d loss / d nll_n

  def body(dq_NxE, i):
    rows_SxCxE, ids_SxC, scores_NxSxC, keep_SxC = _chunk_scores(q, table_SxRxE, i, plan)
    p_NxSxC = jnp.where(keep_SxC[None], jnp.exp(scores_NxSxC - lse_N[:, None, None]), 0.0)
    one_hot = (ids_SxC[None] == targets_N[:, None, None]).astype(jnp.float32)
    d_NxSxC = coef_N[:, None, None] * (p_NxSxC - one_hot)  # d loss / d score
    dq_NxE = dq_NxE + jnp.einsum("nsc,sce->ne", d_NxSxC, rows_SxCxE)
    return dq_NxE, jnp.einsum("nsc,ne->sce", d_NxSxC, q)

  dq_NxE, drows_KxSxCxE = jax.lax.scan(body, jnp.zeros_like(q), jnp.arange(plan.num_chunks))
  drows_SxRxE = jnp.moveaxis(drows_KxSxCxE, 0, 1).reshape(plan.shards, plan.num_chunks * plan.chunk, -1)
  drows_SxRxE = parallel.constrain(drows_SxRxE[:, : plan.per_shard], ("items", None, "feature_embed"))
  dtable_VxE = drows_SxRxE.reshape(table_VxE.shape).astype(table_VxE.dtype)
  # loss = Σ w·nll / max(Σ w, 1): the weights' own gradient (zero where the weight is frozen data).
  dweights_N = g * (nll_N - jnp.where(total > 1.0, loss, 0.0)) / denom
  return (dq_NxE.astype(queries_NxE.dtype), None, dweights_N.astype(weights_N.dtype), dtable_VxE)


_sl_loss.defvjp(_sl_loss_fwd, _sl_loss_bwd)


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


@jax.named_scope("cl_loss")
def cl_loss(queries_NxE, targets_N, weights_N, table_VxE, key, *, num_negatives: int = 128,
            temperature: float = 0.07, chunk: int = 0):
  """InfoNCE: the target item against in-batch targets of other positions and sampled items.

  The in-batch logits are streamed over chunks of C positions with an online log-sum-exp and
  `jax.checkpoint`, so memory is [N, C] like `sl_loss`, never [N, N] (N = B·L = 131,072 at
  the paper's recipe would be a 69 GB matrix).
  """
  q, pos_NxE, sampled_NxS = _cl_parts(queries_NxE, targets_N, table_VxE, key, num_negatives,
                                      temperature)
  n = targets_N.shape[0]
  chunk = min(chunk or default_chunk(n), n)
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
