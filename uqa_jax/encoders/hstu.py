"""HSTU (Zhai et al. 2024): pointwise SiLU attention normalised by n, U-gating, relative bias.

Per layer, with x̂ = LayerNorm(x):
  U, V, Q, K = SiLU(x̂ W_uvqk)
  A = SiLU(Q Kᵀ + rab) / n, the causal (and padding) mask applied after the SiLU, no softmax
  out = x + W_o(U ⊙ LayerNorm(A V))
rab is a learned per-head bias on the relative distance i - j (clipped to max_len - 1) plus,
when the batch carries timestamps, a learned per-head bias on the bucket of the time gap
floor(ln(max(|t_i - t_j|, 1)) / 0.301) (HSTU's bucketing, `time_buckets` buckets, the last one
open-ended). The reference implementation measures the gap from the *next* click's time t_{i+1};
we use t_i, so step i depends on nothing after it (strictly causal, like the other encoders).
n is the configured maximum length `max_len` (the reference divides by its padded length,
max_sequence_len): a constant, so step i's output depends neither on later clicks nor on how
many there are, nor on how far a batch is padded.
`encoder.attention_impl="pallas"` computes the attention with the fused kernel of
`hstu_pallas` (no [B, H, L, L] array; the time buckets computed inside it); `hstu_attention`
below is the plain `jnp` reference it is tested against ("xla", the default on every platform).
Shape letters: B batch, L length, D width, H heads, E head dim, T time buckets.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders import hstu_pallas
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.runtime import parallel

READS = ("num_heads", "remat", "time_buckets", "attention_impl")  # EncoderConfig fields read besides config.COMMON (tested)


def hstu_attention(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, rab_BxHxLxL, mask_BxL, n: int):
  """(SiLU(QKᵀ + rab) ⊙ causal-and-valid) / n · V -> [B, L, H, E]; rab may broadcast over B."""
  length = q_BxLxHxE.shape[1]
  scores_BxHxLxL = jnp.einsum("bqhe,bkhe->bhqk", q_BxLxHxE, k_BxLxHxE) + rab_BxHxLxL
  causal_LxL = jnp.tril(jnp.ones((length, length), bool))
  keep_Bx1xLxL = causal_LxL[None, None] & mask_BxL[:, None, None, :].astype(bool)
  a_BxHxLxL = jnp.where(keep_Bx1xLxL, nn.silu(scores_BxHxLxL), 0.0) / n
  return jnp.einsum("bhqk,bkhe->bqhe", a_BxHxLxL, v_BxLxHxE)


def relative_bias(table_HxR, length, max_len):
  """[H, L, L] from a per-head table over distances 0..max_len-1 (i - j, clipped; j > i is masked)."""
  dist_LxL = jnp.clip(jnp.arange(length)[:, None] - jnp.arange(length)[None, :], 0, max_len - 1)
  return table_HxR[:, dist_LxL]


def time_buckets(timestamps_BxL, num_buckets):
  """[B, L, L] int32 bucket of the gap |t_i - t_j| on a log scale (HSTU: ln(gap) / 0.301)."""
  gap_BxLxL = jnp.abs(timestamps_BxL[:, :, None] - timestamps_BxL[:, None, :]).astype(jnp.float32)
  bucket = jnp.floor(jnp.log(jnp.maximum(gap_BxLxL, 1.0)) / 0.301)
  return jnp.clip(bucket, 0, num_buckets - 1).astype(jnp.int32)


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, timestamps_BxL, buckets_BxLxL, deterministic):
    """`buckets_BxLxL`: `time_buckets(timestamps_BxL)` when the caller computed them once for all
    layers (Model does, for the XLA path), else None (computed here when needed)."""
    c = self.cfg
    h, e = c.num_heads, c.d_model // c.num_heads
    x_BxLxD = parallel.constrain(x_BxLxD, common.BLD)
    y = common.layer_norm("in_norm")(x_BxLxD)
    uvqk = nn.silu(common.dense(4 * c.d_model, ("embed", "heads"), c, name="uvqk")(y))
    u, v, q, k = jnp.split(uvqk, 4, axis=-1)
    split = lambda t: t.reshape(*t.shape[:2], h, e)
    rab_table = self.param("rab", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "positions")),
                           (h, c.max_len), jnp.dtype(c.param_dtype))
    rab_HxLxL = relative_bias(rab_table, x_BxLxD.shape[1], c.max_len)
    time_table = None
    if timestamps_BxL is not None:
      time_table = self.param("time_rab", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "positions")),
                              (h, c.time_buckets), jnp.dtype(c.param_dtype))
    with jax.named_scope("attention"):
      if common.attention_impl(c) == "pallas":
        av = hstu_pallas.hstu_attention(split(q), split(k), split(v), rab_HxLxL, mask_BxL, c.max_len,
                                        timestamps_BxL, time_table)
      else:
        rab = rab_HxLxL[None]
        if time_table is not None:
          if buckets_BxLxL is None:
            buckets_BxLxL = time_buckets(timestamps_BxL, c.time_buckets)
          rab = rab + jnp.moveaxis(time_table[:, buckets_BxLxL], 0, 1)
        av = hstu_attention(split(q), split(k), split(v), rab, mask_BxL, c.max_len)
    av = av.reshape(x_BxLxD.shape)
    out = common.dense(c.d_model, ("heads", "embed"), c, name="o")(u * common.layer_norm("av_norm")(av))
    return x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic), None


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    use_time = timestamps_BxL is not None and self.cfg.time_buckets > 0
    timestamps_BxL = timestamps_BxL if use_time else None
    buckets = None  # the XLA path's [B, L, L] buckets, once for every layer (the kernel computes its own)
    if use_time and common.attention_impl(self.cfg) == "xla":
      buckets = time_buckets(timestamps_BxL, self.cfg.time_buckets)
    x, _ = common.stack(Block, self.cfg, num_inputs=3)(x_BxLxD, mask_BxL, timestamps_BxL, buckets, deterministic)
    return common.layer_norm("norm")(x)
