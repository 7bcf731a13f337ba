"""GRU4Rec: stacked GRUs over the sequence (paper: 3 layers, hidden 1024).

Per layer (the PyTorch / `flax.linen.GRUCell` equations):
  r = σ(W_ir x + b_ir + W_hr h),  z = σ(W_iz x + b_iz + W_hz h)
  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h
The input projections of all L steps are one [B·L, D] x [D, 3D] matmul before the scan; each
`lax.scan` step does only the recurrent [B, D] x [D, 3D] matmul. Both kernels carry logical
axis names, so they shard like every other weight. Outputs are causal by construction and
right padding cannot reach a valid step. Shape letters: B batch, L length, D width.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.runtime import parallel

READS = ()  # EncoderConfig fields read besides config.COMMON (tested)


def _orthogonal_blocks(key, shape, dtype):
  """[D, 3D]: three independent orthogonal [D, D] blocks (GRUCell's recurrent init, per gate)."""
  d = shape[0]
  keys = jax.random.split(key, shape[1] // d)
  return jnp.concatenate([nn.initializers.orthogonal()(k, (d, d), dtype) for k in keys], axis=1)


class GRULayer(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    c = self.cfg
    d, dtype = c.d_model, jnp.dtype(c.dtype)
    gates_x_BxLx3D = common.dense(3 * d, ("embed", "mlp"), c, name="input")(x_BxLxD)
    w_h_Dx3D = self.param("hidden_kernel", nn.with_logical_partitioning(_orthogonal_blocks, ("embed", "mlp")),
                          (d, 3 * d), jnp.dtype(c.param_dtype)).astype(dtype)
    b_hn_D = self.param("hidden_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                        (d,), jnp.dtype(c.param_dtype)).astype(dtype)

    # The recurrence carries h and computes its gates in float32 (a bfloat16 carry would round
    # at each of the L steps); the two matmuls run in the compute dtype.
    def step(h_BxD, gates_x_Bx3D):
      xr, xz, xn = jnp.split(gates_x_Bx3D.astype(jnp.float32), 3, axis=-1)
      hh = jnp.matmul(h_BxD.astype(dtype), w_h_Dx3D, preferred_element_type=jnp.float32)
      hr, hz, hn = jnp.split(hh, 3, axis=-1)
      r, z = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
      n = jnp.tanh(xn + r * (hn + b_hn_D.astype(jnp.float32)))
      h_BxD = (1.0 - z) * n + z * h_BxD
      return h_BxD, h_BxD.astype(dtype)

    h0_BxD = jnp.zeros((x_BxLxD.shape[0], d), jnp.float32)
    _, hs_LxBxD = jax.lax.scan(step, h0_BxD, jnp.moveaxis(gates_x_BxLx3D, 1, 0))
    return jnp.moveaxis(hs_LxBxD, 0, 1)


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    del timestamps_BxL  # no time signal in this encoder
    x = x_BxLxD
    for i in range(self.cfg.num_layers):
      x = GRULayer(self.cfg, name=f"gru_{i}")(parallel.constrain(x, common.BLD))
      x = nn.Dropout(self.cfg.dropout)(x, deterministic=deterministic)
    return x
