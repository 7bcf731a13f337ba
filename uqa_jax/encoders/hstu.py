"""HSTU (Zhai et al. 2024): pointwise SiLU attention normalised by n, U-gating, relative bias.

Per layer, with x̂ = LayerNorm(x):
  U, V, Q, K = SiLU(x̂ W_uvqk)
  A = SiLU(Q Kᵀ + rab) / n, the causal (and padding) mask applied after the SiLU, no softmax
  out = x + W_o(U ⊙ LayerNorm(A V))
rab is a learned per-head bias on the relative distance i - j (clipped to max_len - 1); n is
the number of valid steps of the row. Our data carries no timestamps, so there is no time bias.
Shape letters: B batch, L length, D width, H heads, E head dim.
"""

import flax.linen as nn
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig


def hstu_attention(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, rab_HxLxL, mask_BxL):
  """(SiLU(QKᵀ + rab) ⊙ causal-and-valid) / n · V -> [B, L, H, E]."""
  length = q_BxLxHxE.shape[1]
  scores_BxHxLxL = jnp.einsum("bqhe,bkhe->bhqk", q_BxLxHxE, k_BxLxHxE) + rab_HxLxL[None]
  causal_LxL = jnp.tril(jnp.ones((length, length), bool))
  keep_Bx1xLxL = causal_LxL[None, None] & mask_BxL[:, None, None, :].astype(bool)
  n_Bx1x1x1 = jnp.maximum(mask_BxL.sum(-1), 1).astype(scores_BxHxLxL.dtype)[:, None, None, None]
  a_BxHxLxL = jnp.where(keep_Bx1xLxL, nn.silu(scores_BxHxLxL), 0.0) / n_Bx1x1x1
  return jnp.einsum("bhqk,bkhe->bqhe", a_BxHxLxL, v_BxLxHxE)


def relative_bias(table_HxR, length, max_len):
  """[H, L, L] from a per-head table over distances 0..max_len-1 (i - j, clipped; j > i is masked)."""
  dist_LxL = jnp.clip(jnp.arange(length)[:, None] - jnp.arange(length)[None, :], 0, max_len - 1)
  return table_HxR[:, dist_LxL]


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic):
    c = self.cfg
    h, e = c.num_heads, c.d_model // c.num_heads
    y = nn.LayerNorm(name="in_norm")(x_BxLxD)
    uvqk = nn.silu(common.dense(4 * c.d_model, ("embed", "heads"), c, name="uvqk")(y))
    u, v, q, k = jnp.split(uvqk, 4, axis=-1)
    split = lambda t: t.reshape(*t.shape[:2], h, e)
    rab_table = self.param("rab", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "length")),
                           (h, c.max_len), jnp.dtype(c.param_dtype))
    rab = relative_bias(rab_table, x_BxLxD.shape[1], c.max_len)
    av = hstu_attention(split(q), split(k), split(v), rab, mask_BxL).reshape(x_BxLxD.shape)
    out = common.dense(c.d_model, ("heads", "embed"), c, name="o")(u * nn.LayerNorm(name="av_norm")(av))
    return x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic), None


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True):
    x, _ = common.stack(Block, self.cfg)(x_BxLxD, mask_BxL, deterministic)
    return nn.LayerNorm(name="norm")(x)
