"""GRU4Rec: stacked GRUs over the sequence (paper: 3 layers, hidden 1024).

Each layer is `nn.RNN(nn.GRUCell)` (a `lax.scan` over time), so outputs are causal by
construction and right padding cannot reach a valid step. Shape letters: B batch, L length, D width.
"""

import flax.linen as nn
import jax.numpy as jnp

from uqa_jax.encoders.config import EncoderConfig


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    del timestamps_BxL  # no time signal in this encoder
    c = self.cfg
    x = x_BxLxD
    for i in range(c.num_layers):
      cell = nn.GRUCell(features=c.d_model, dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype),
                        name=f"gru_{i}")
      x = nn.RNN(cell, name=f"rnn_{i}")(x)
      x = nn.Dropout(c.dropout)(x, deterministic=deterministic)
    return x
