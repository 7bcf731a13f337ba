"""SASRec: post-LN Transformer blocks, learned absolute positions, ReLU FFN, causal + padding mask.

Shape letters: B batch, L length, D width.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.runtime import parallel

READS = ("num_heads", "d_ff", "remat", "attention_impl")  # EncoderConfig fields read besides config.COMMON (tested)


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, lengths_B, deterministic):
    c = self.cfg
    h, e = c.num_heads, c.d_model // c.num_heads
    x_BxLxD = parallel.constrain(x_BxLxD, common.BLD)
    qkv = common.dense(3 * c.d_model, ("embed", "heads"), c, name="qkv")(x_BxLxD)
    q, k, v = jnp.split(qkv.reshape(*qkv.shape[:2], 3 * h, e), 3, axis=2)
    out = common.causal_attention(q, k, v, lengths_B, common.attention_impl(c))
    out = common.dense(c.d_model, ("heads", "embed"), c, name="o")(out.reshape(*out.shape[:2], c.d_model))
    x_BxLxD = common.layer_norm("attn_norm")(x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic))
    with jax.named_scope("mlp"):
      y = nn.relu(common.dense(c.ff, ("embed", "mlp"), c, name="ff1")(x_BxLxD))
      y = parallel.constrain(y, ("batch", "act_length", "act_mlp"))
      y = common.dense(c.d_model, ("mlp", "embed"), c, name="ff2")(nn.Dropout(c.dropout)(y, deterministic=deterministic))
    return common.layer_norm("ff_norm")(x_BxLxD + nn.Dropout(c.dropout)(y, deterministic=deterministic)), None


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    del timestamps_BxL  # no time signal in this encoder
    c = self.cfg
    length = x_BxLxD.shape[1]
    positions = self.param("positions", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("positions", "embed")), (c.max_len, c.d_model), jnp.dtype(c.param_dtype))
    x = x_BxLxD * jnp.sqrt(c.d_model) + positions[:length]
    x = nn.Dropout(c.dropout)(x, deterministic=deterministic) * mask_BxL[..., None]
    x, _ = common.stack(Block, c)(x, mask_BxL.sum(-1), deterministic)
    return x
