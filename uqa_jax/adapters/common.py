"""Pieces every adapter shares: padding-safe pooling and the output norm.

Shape letters: B batch, L history length, D encoder width, K soft tokens, M d_llm.
"""

import flax.linen as nn
import jax.numpy as jnp


def valid_states(states_BxLxD, mask_BxL):
  """float32 states with padded positions set to 0 by `where` (NaN × 0 would stay NaN)."""
  return jnp.where(mask_BxL[..., None].astype(bool), states_BxLxD.astype(jnp.float32), 0.0)


def masked_mean(states_BxLxD, mask_BxL):
  """Mean over valid positions; 0 for a row with none."""
  count_B = jnp.maximum(mask_BxL.astype(jnp.float32).sum(-1), 1.0)
  return valid_states(states_BxLxD, mask_BxL).sum(1) / count_B[:, None]


def last_states(states_BxLxD, mask_BxL, k: int):
  """The last k valid states, oldest first, [B, k, D]; slots before a short row's start are 0.

  Valid steps come first in every row (right padding), so the last valid one is length - 1.
  """
  lengths_B = mask_BxL.astype(jnp.int32).sum(-1)
  positions_BxK = lengths_B[:, None] - k + jnp.arange(k)[None, :]
  present_BxK = positions_BxK >= 0
  clipped = jnp.clip(positions_BxK, 0, states_BxLxD.shape[1] - 1)
  picked = jnp.take_along_axis(valid_states(states_BxLxD, mask_BxL), clipped[..., None], axis=1)
  return jnp.where(present_BxK[..., None], picked, 0.0)


class OutputNorm(nn.Module):
  """RMSNorm over d_llm with a learned scale initialised to `rms`: tokens start at the LLM's size."""
  rms: float
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x_BxKxM):
    scale_M = self.param("scale", named(nn.initializers.constant(self.rms)), (x_BxKxM.shape[-1],), jnp.float32)
    x = x_BxKxM.astype(jnp.float32)
    return x * jnp.reciprocal(jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps)) * scale_M


def named(init):
  """`init` whose parameter carries the logical names `adapter` (first axis) and `adapter_out`
  (a matrix's second): every adapter parameter is small and replicated by rule."""
  return lambda key, shape, dtype=jnp.float32: nn.with_logical_partitioning(
      init, ("adapter", "adapter_out")[:len(shape)])(key, shape, dtype)


def dense(features: int, name: str, bias_init=nn.initializers.zeros):
  return nn.Dense(features, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=named(nn.initializers.lecun_normal()),
                  bias_init=named(bias_init), name=name)


def layer_norm(name: str):
  return nn.LayerNorm(dtype=jnp.float32, scale_init=named(nn.initializers.ones_init()),
                      bias_init=named(nn.initializers.zeros_init()), name=name)


def token_dense(d_llm: int, name: str):
  """The map into the LLM's width that `OutputNorm` follows; its bias starts small and random.

  With a zero bias a zero input (the `zeros` control; a short row's empty `recent` slot) would
  give an exactly zero soft token, and a zero vector stays zero through every layer of the LLM
  while each RMSNorm's Jacobian there is 1/sqrt(eps) (~316): through SmolLM2's 30 layers the
  gradient overflows to NaN. A random bias makes every soft token a token-sized vector.
  """
  return dense(d_llm, name, bias_init=nn.initializers.normal(0.1))  # ~ PyTorch Linear's bias scale
