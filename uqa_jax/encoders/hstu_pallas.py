"""Fused HSTU attention in Pallas: SiLU(QKᵀ + rab + time bias) / n, causal and padding mask, · V.

Blockwise, never materialising the [B, H, L, L] scores, attention or time-bias matrices: each
program holds one [bq, bk] block at a time. The relative-position bias comes in as [H, L, L]
(built by XLA from the per-head table; it has no batch axis), the time bias is computed inside
the kernel from the click times and the per-head bucket table, exactly as
`hstu.time_buckets` buckets them, and read from the table by a gather on the table's ref (its
gradient: one-hot contractions, 16 buckets at a time). `jax.custom_vjp` with three backward kernels:

  dq     grid (B, H, q blocks), loop over key blocks      -> dQ
  dkv    grid (B, H, k blocks), loop over query blocks    -> dK, dV
  dbias  grid (H, q blocks, k blocks), loop over the batch -> d rab [H, L, L] and the time
         table's gradient per block [H, q blocks, k blocks, T] (summed by XLA)

Blocks strictly above the diagonal are skipped (the causal mask zeroes them). Shape letters:
B batch, H heads, L length (padded to a multiple of the block), E head dim, T time buckets,
bq / bk block sizes. `hstu.hstu_attention` is the plain `jnp` reference this must equal
(tests/unit/encoders/test_hstu_pallas.py: forward and every gradient within 1e-5 in float32, interpret mode).

On CPU the kernels run in Pallas' interpret mode (correct, not fast: for tests). Written for
Triton (GPU): every value a power of two in size (blocks, head dim, the padded [T] table),
the table read through its ref with an index array (a pointer gather there), refs of full
length only ever sliced. Not yet compiled on a GPU (benchmarks/gpu_check.sh runs the tests and
timings there when a session is lent one). Mosaic (TPU) is less likely to take it: a ref
gather, 1-D refs sliced at dynamic offsets.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

LOG_BASE = 0.301  # hstu.time_buckets: floor(ln(gap) / 0.301)


def _silu_and_grad(s):
  sig = jax.nn.sigmoid(s)
  return s * sig, sig * (1.0 + s * (1.0 - sig))


def _buckets(ts_q, ts_k, num_buckets):
  """[bq, bk] int32 bucket of the gap |t_i - t_j| (int click times), as `hstu.time_buckets`."""
  gap = jnp.abs(ts_q[:, None] - ts_k[None, :]).astype(jnp.float32)
  bucket = jnp.floor(jnp.log(jnp.maximum(gap, 1.0)) / LOG_BASE)
  return jnp.clip(bucket, 0, num_buckets - 1).astype(jnp.int32)


def _block_scores(q, k, rab, valid_k, ts_q, ts_k, time_ref, num_buckets, qi, kj, bq, bk):
  """Scores [bq, bk] (float32), the keep mask, and the time buckets (None without time).

  The time bias is read from the [T] table ref with the bucket array as its index: on Triton a
  pointer gather (a `tl.load` of computed addresses), in interpret mode a take.
  """
  s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) + rab
  bucket = None
  if num_buckets:
    bucket = _buckets(ts_q, ts_k, num_buckets)
    s = s + time_ref[bucket].astype(jnp.float32)
  rows = qi * bq + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  cols = kj * bk + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  keep = (rows >= cols) & (valid_k[None, :] > 0)
  return s, keep, bucket


def _last_key_block(qi, bq, bk):
  return (qi * bq + bq - 1) // bk  # blocks past it lie strictly above the diagonal


def _fwd_kernel(q_ref, k_ref, v_ref, rab_ref, valid_ref, ts_ref, time_ref, o_ref, *, bq, bk, n, buckets):
  qi = pl.program_id(2)
  q = q_ref[...].astype(jnp.float32)
  ts_q = ts_ref[pl.ds(qi * bq, bq)] if buckets else None

  def body(kj, acc):
    keys = pl.ds(kj * bk, bk)
    s, keep, _ = _block_scores(q, k_ref[keys, :].astype(jnp.float32), rab_ref[:, keys].astype(jnp.float32),
                               valid_ref[keys], ts_q, ts_ref[keys] if buckets else None, time_ref, buckets, qi, kj, bq, bk)
    a = jnp.where(keep, _silu_and_grad(s)[0], 0.0) / n
    return acc + jnp.dot(a, v_ref[keys, :].astype(jnp.float32), preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(0, _last_key_block(qi, bq, bk) + 1, body, jnp.zeros(q.shape, jnp.float32))
  o_ref[...] = acc.astype(o_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, rab_ref, valid_ref, ts_ref, time_ref, do_ref, dq_ref, *, bq, bk, n, buckets):
  qi = pl.program_id(2)
  q = q_ref[...].astype(jnp.float32)
  do = do_ref[...].astype(jnp.float32)
  ts_q = ts_ref[pl.ds(qi * bq, bq)] if buckets else None

  def body(kj, dq):
    keys = pl.ds(kj * bk, bk)
    k = k_ref[keys, :].astype(jnp.float32)
    s, keep, _ = _block_scores(q, k, rab_ref[:, keys].astype(jnp.float32), valid_ref[keys], ts_q,
                               ts_ref[keys] if buckets else None, time_ref, buckets, qi, kj, bq, bk)
    da = jax.lax.dot_general(do, v_ref[keys, :].astype(jnp.float32), (((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)
    ds = jnp.where(keep, da * _silu_and_grad(s)[1], 0.0) / n
    return dq + jnp.dot(ds, k, preferred_element_type=jnp.float32)

  dq = jax.lax.fori_loop(0, _last_key_block(qi, bq, bk) + 1, body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, rab_ref, valid_ref, ts_ref, time_ref, do_ref, dk_ref, dv_ref, *,
                bq, bk, n, buckets, num_q_blocks):
  kj = pl.program_id(2)
  k = k_ref[...].astype(jnp.float32)
  v = v_ref[...].astype(jnp.float32)
  valid_k = valid_ref[pl.ds(kj * bk, bk)]
  ts_k = ts_ref[pl.ds(kj * bk, bk)] if buckets else None

  def body(qi, carry):
    dk, dv = carry
    rows = pl.ds(qi * bq, bq)
    q = q_ref[rows, :].astype(jnp.float32)
    do = do_ref[rows, :].astype(jnp.float32)
    s, keep, _ = _block_scores(q, k, rab_ref[rows, :].astype(jnp.float32), valid_k,
                               ts_ref[rows] if buckets else None, ts_k, time_ref, buckets, qi, kj, bq, bk)
    silu, dsilu = _silu_and_grad(s)
    a = jnp.where(keep, silu, 0.0) / n
    dv = dv + jax.lax.dot_general(a, do, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    da = jax.lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    ds = jnp.where(keep, da * dsilu, 0.0) / n
    dk = dk + jax.lax.dot_general(ds, q, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return dk, dv

  first = (kj * bk) // bq  # query blocks before it lie strictly above the diagonal
  dk, dv = jax.lax.fori_loop(first, num_q_blocks, body, (jnp.zeros(k.shape, jnp.float32),
                                                         jnp.zeros(v.shape, jnp.float32)))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


T_CHUNK = 16  # buckets per one-hot slice in the time table's gradient: [bq, bk, 16] per step


def _dbias_kernel(q_ref, k_ref, v_ref, rab_ref, valid_ref, ts_ref, time_ref, do_ref, drab_ref, dtime_ref, *,
                  bq, bk, n, buckets, batch):
  """d rab of block (qi, kj) of one head, summed over the batch, and this block's part of the
  time table's gradient: Σ ds per bucket as one-hot contractions over T_CHUNK buckets at a time
  (static slices; a scatter-add would need atomics, whose duplicates interpret mode drops)."""
  qi, kj = pl.program_id(1), pl.program_id(2)
  rab = rab_ref[...].astype(jnp.float32)
  chunks = dtime_ref.shape[-1] // T_CHUNK if buckets else 0
  dtime_ref[...] = jnp.zeros(dtime_ref.shape, dtime_ref.dtype)

  def body(b, carry):
    drab, parts = carry
    s, keep, bucket = _block_scores(q_ref[b].astype(jnp.float32), k_ref[b].astype(jnp.float32), rab,
                                    valid_ref[b], ts_ref[b, pl.ds(qi * bq, bq)] if buckets else None,
                                    ts_ref[b, pl.ds(kj * bk, bk)] if buckets else None, time_ref, buckets,
                                    qi, kj, bq, bk)
    da = jax.lax.dot_general(do_ref[b].astype(jnp.float32), v_ref[b].astype(jnp.float32),
                             (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    ds = jnp.where(keep, da * _silu_and_grad(s)[1], 0.0) / n
    if chunks:
      ids = jax.lax.broadcasted_iota(jnp.int32, (1, 1, T_CHUNK), 2)
      parts = tuple(part + jnp.sum(jnp.where(bucket[..., None] == c * T_CHUNK + ids, ds[..., None], 0.0), axis=(0, 1))
                    for c, part in enumerate(parts))
    return drab + ds, parts

  @pl.when(kj <= _last_key_block(qi, bq, bk))
  def _():
    zeros = (jnp.zeros((bq, bk), jnp.float32), tuple(jnp.zeros((T_CHUNK,), jnp.float32) for _ in range(chunks)))
    drab, parts = jax.lax.fori_loop(0, batch, body, zeros)
    drab_ref[...] = drab.astype(drab_ref.dtype)
    for c, part in enumerate(parts):
      dtime_ref[pl.ds(c * T_CHUNK, T_CHUNK)] = part.astype(dtime_ref.dtype)

  @pl.when(kj > _last_key_block(qi, bq, bk))
  def _():
    drab_ref[...] = jnp.zeros(drab_ref.shape, drab_ref.dtype)


def _specs(b, h, length, e, t, bq, bk, by):
  """BlockSpecs of (q, k, v, rab, valid, ts, time table, dO) for a grid whose third axis walks
  `by` = "q" (query blocks, full keys), "k" (key blocks, full queries)."""
  full = pl.BlockSpec((None, None, length, e), lambda i, j, x: (i, j, 0, 0))
  q_block = pl.BlockSpec((None, None, bq, e), lambda i, j, x: (i, j, x, 0))
  k_block = pl.BlockSpec((None, None, bk, e), lambda i, j, x: (i, j, x, 0))
  per_b = pl.BlockSpec((None, length), lambda i, j, x: (i, 0))
  table = pl.BlockSpec((None, t), lambda i, j, x: (j, 0))
  if by == "q":
    rab = pl.BlockSpec((None, bq, length), lambda i, j, x: (j, x, 0))
    return [q_block, full, full, rab, per_b, per_b, table, q_block]
  rab = pl.BlockSpec((None, length, bk), lambda i, j, x: (j, 0, x))
  return [full, k_block, k_block, rab, per_b, per_b, table, full]


def _prepare(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, rab_HxLxL, valid_BxL, timestamps_BxL, time_table_HxT, block):
  """Transposes to [B, H, L, E], pads L to a multiple of the block (padding is invalid)."""
  length = q_BxLxHxE.shape[1]
  pad = -length % block
  heads = lambda x: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, pad), (0, 0)))
  rab = jnp.pad(rab_HxLxL, ((0, 0), (0, pad), (0, pad)))
  valid = jnp.pad(valid_BxL.astype(jnp.int32), ((0, 0), (0, pad)))
  buckets = 0 if time_table_HxT is None else time_table_HxT.shape[1]
  ts = jnp.pad(timestamps_BxL.astype(jnp.int32), ((0, 0), (0, pad))) if buckets else jnp.zeros_like(valid)
  # The table's rows padded to a power of two (>= 16, Triton's smallest block); never indexed.
  table = time_table_HxT if buckets else jnp.zeros((rab.shape[0], 0), jnp.float32)
  table = jnp.pad(table, ((0, 0), (0, _pow2(max(table.shape[1], T_CHUNK)) - table.shape[1])))
  return heads(q_BxLxHxE), heads(k_BxLxHxE), heads(v_BxLxHxE), rab, valid, ts, table, buckets


def _pow2(n: int) -> int:
  return 1 << (n - 1).bit_length()


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _fused(q, k, v, rab, valid, ts, table, n, block, interpret, buckets):
  return _forward(q, k, v, rab, valid, ts, table, n, block, interpret, buckets)


def _forward(q, k, v, rab, valid, ts, table, n, block, interpret, buckets):
  b, h, length, e = q.shape
  kernel = functools.partial(_fwd_kernel, bq=block, bk=block, n=float(n), buckets=buckets)
  return pl.pallas_call(
      kernel, grid=(b, h, length // block), in_specs=_specs(b, h, length, e, table.shape[1], block, block, "q")[:7],
      out_specs=pl.BlockSpec((None, None, block, e), lambda i, j, x: (i, j, x, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), interpret=interpret, name="hstu_attention_fwd",
  )(q, k, v, rab, valid, ts, table)


def _fused_fwd(q, k, v, rab, valid, ts, table, n, block, interpret, buckets):
  out = _forward(q, k, v, rab, valid, ts, table, n, block, interpret, buckets)
  return out, (q, k, v, rab, valid, ts, table)


def _fused_bwd(n, block, interpret, buckets, residuals, do):
  q, k, v, rab, valid, ts, table = residuals
  b, h, length, e = q.shape
  t = table.shape[1]
  args = (q, k, v, rab, valid, ts, table, do)
  common = dict(bq=block, bk=block, n=float(n), buckets=buckets)
  nb = length // block
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, **common), grid=(b, h, nb), in_specs=_specs(b, h, length, e, t, block, block, "q"),
      out_specs=pl.BlockSpec((None, None, block, e), lambda i, j, x: (i, j, x, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), interpret=interpret, name="hstu_attention_dq")(*args)
  kv_block = pl.BlockSpec((None, None, block, e), lambda i, j, x: (i, j, x, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, num_q_blocks=nb, **common), grid=(b, h, nb),
      in_specs=_specs(b, h, length, e, t, block, block, "k"), out_specs=[kv_block, kv_block],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      interpret=interpret, name="hstu_attention_dkv")(*args)
  all_b = lambda blk, axis: pl.BlockSpec(
      (b, None, blk, e), lambda j, x, y: (0, j, (x, y)[axis], 0))
  drab, dtime = pl.pallas_call(
      functools.partial(_dbias_kernel, batch=b, **common), grid=(h, nb, nb),
      in_specs=[all_b(block, 0), all_b(block, 1), all_b(block, 1),
                pl.BlockSpec((None, block, block), lambda j, x, y: (j, x, y)),
                pl.BlockSpec((b, block), lambda j, x, y: (0, y)),
                pl.BlockSpec((b, length), lambda j, x, y: (0, 0)),
                pl.BlockSpec((None, t), lambda j, x, y: (j, 0)), all_b(block, 0)],
      out_specs=[pl.BlockSpec((None, block, block), lambda j, x, y: (j, x, y)),
                 pl.BlockSpec((None, None, None, t), lambda j, x, y: (j, x, y, 0))],
      out_shape=[jax.ShapeDtypeStruct(rab.shape, jnp.float32), jax.ShapeDtypeStruct((h, nb, nb, t), jnp.float32)],
      interpret=interpret, name="hstu_attention_dbias")(*args)
  dtable = dtime.sum((1, 2)).astype(table.dtype)  # zeros without time (the table is then a dummy)
  return dq, dk, dv, drab.astype(rab.dtype), None, None, dtable


_fused.defvjp(_fused_fwd, _fused_bwd)


def hstu_attention(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, rab_HxLxL, mask_BxL, n: int, timestamps_BxL=None,
                   time_table_HxT=None, *, block: int = 128, interpret: bool | None = None):
  """The fused equal of `hstu.hstu_attention` -> [B, L, H, E].

  `rab_HxLxL` is the relative-position bias (no batch axis); with `timestamps_BxL` and
  `time_table_HxT` the kernel adds the bucketed time-gap bias itself. `block` (rows of the
  query and key blocks, a power of two) shrinks for short sequences to the length's next power
  of two (>= 16: Triton's smallest dot); the head dim should be a power of two >= 16 for Triton
  too. `interpret` defaults to True on CPU.
  """
  if (timestamps_BxL is None) != (time_table_HxT is None):
    raise ValueError("hstu_pallas.hstu_attention: pass both timestamps_BxL and time_table_HxT, or neither")
  length = q_BxLxHxE.shape[1]
  if block < 16 or block & (block - 1):
    raise ValueError(f"hstu_pallas.hstu_attention: block={block}; expected a power of two >= 16")
  block = min(block, _pow2(max(length, 16)))
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  q, k, v, rab, valid, ts, table, buckets = _prepare(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, rab_HxLxL, mask_BxL,
                                                      timestamps_BxL, time_table_HxT, block)
  out = _fused(q, k, v, rab, valid, ts, table, n, block, interpret, buckets)
  return jnp.swapaxes(out, 1, 2)[:, :length]
