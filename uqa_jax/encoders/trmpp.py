"""Trm++: a Llama-style block: pre-RMSNorm, RoPE, SwiGLU, no biases.

Shape letters: B batch, L length, D width, H heads, E head dim, F MLP width.
Attention goes through `jax.nn.dot_product_attention` (`common.causal_attention`): cuDNN's
fused kernel on a GPU in bfloat16/float16, XLA's elsewhere (`encoder.attention_impl`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.runtime import parallel

READS = ("num_heads", "d_ff", "remat", "attention_impl")  # EncoderConfig fields read besides config.COMMON (tested)


def rope(x_BxLxHxE, theta=10000.0):
  e = x_BxLxHxE.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, e, 2, dtype=jnp.float32) / e))
  angles_LxE2 = jnp.arange(x_BxLxHxE.shape[1], dtype=jnp.float32)[:, None] * inv_freq
  cos, sin = jnp.cos(angles_LxE2)[None, :, None], jnp.sin(angles_LxE2)[None, :, None]
  x = x_BxLxHxE.astype(jnp.float32)
  x1, x2 = x[..., : e // 2], x[..., e // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxLxHxE.dtype)


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, lengths_B, deterministic):
    c = self.cfg
    h, e = c.num_heads, c.d_model // c.num_heads
    x_BxLxD = parallel.constrain(x_BxLxD, common.BLD)
    y = common.rms_norm("attn_norm", c)(x_BxLxD)
    qkv = common.dense(3 * c.d_model, ("embed", "heads"), c, use_bias=False, name="qkv")(y)
    qkv = parallel.constrain(qkv.reshape(*qkv.shape[:2], 3 * h, e), ("batch", "act_length", "act_heads", None))
    q, k, v = jnp.split(qkv, 3, axis=2)
    out = common.causal_attention(rope(q), rope(k), v, lengths_B, common.attention_impl(c))
    out = common.dense(c.d_model, ("heads", "embed"), c, use_bias=False, name="o")(
        out.reshape(*out.shape[:2], c.d_model))
    x_BxLxD = x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic)
    y = common.rms_norm("mlp_norm", c)(x_BxLxD)
    f = c.d_ff or (8 * c.d_model // 3 + 7) // 8 * 8
    with jax.named_scope("mlp"):
      gate = common.dense(f, ("embed", "mlp"), c, use_bias=False, name="gate")(y)
      up = common.dense(f, ("embed", "mlp"), c, use_bias=False, name="up")(y)
      hidden = parallel.constrain(nn.silu(gate) * up, ("batch", "act_length", "act_mlp"))
      out = common.dense(c.d_model, ("mlp", "embed"), c, use_bias=False, name="down")(hidden)
    return x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic), None


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    del timestamps_BxL  # no time signal in this encoder
    x, _ = common.stack(Block, self.cfg)(x_BxLxD, mask_BxL.sum(-1), deterministic)
    return common.rms_norm("norm", self.cfg)(x)
