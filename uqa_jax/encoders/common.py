"""Small pieces several encoders share: masks, dense layers with logical axes, layer stacking."""

import flax.linen as nn
import jax.numpy as jnp


def dense(features, axes, cfg, use_bias=True, name=None, kernel_init=None, bias_init=None,
          dtype=None):
  """nn.Dense whose kernel carries logical axis names (see uqa_jax.parallel.RULES).

  `kernel_init` defaults to LeCun normal, `bias_init` to zeros (nn.Dense's); the bias is named by
  the kernel's last axis; `dtype` (the computation's) defaults to `cfg.dtype`.
  """
  return nn.Dense(features, use_bias=use_bias, dtype=jnp.dtype(dtype or cfg.dtype),
                  param_dtype=jnp.dtype(cfg.param_dtype),
                  kernel_init=nn.with_logical_partitioning(kernel_init or nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(bias_init or nn.initializers.zeros_init(), axes[-1:]),
                  name=name)


def layer_norm(name, dtype=None):
  """nn.LayerNorm (float32 parameters) whose scale and bias carry the logical name `norm`."""
  return nn.LayerNorm(dtype=dtype,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)), name=name)


def rms_norm(name, cfg):
  """nn.RMSNorm whose scale carries the logical name `norm`."""
  return nn.RMSNorm(param_dtype=jnp.dtype(cfg.param_dtype), name=name,
                    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)))


BLD = ("batch", "act_length", "act_embed")  # the residual stream [B, L, D] between layers


def causal_mask(mask_BxL):
  """[B, 1, L, L] bool: query t sees valid keys s <= t (and itself, so no row is empty)."""
  length = mask_BxL.shape[1]
  causal_LxL = jnp.tril(jnp.ones((length, length), bool))
  eye_LxL = jnp.eye(length, dtype=bool)
  return ((causal_LxL[None] & mask_BxL[:, None, :].astype(bool)) | eye_LxL[None])[:, None]


def stack(block_cls, cfg, name="layers", num_inputs=1):
  """`num_layers` copies of `block_cls(cfg)`, scanned (compile time flat in depth), optionally remat.

  The block's signature is `(x, *inputs, deterministic) -> (x, None)`: `x` is the carry, the
  `num_inputs` inputs (masks, biases; None allowed) are broadcast to every layer.
  """
  deterministic_arg = num_inputs + 2  # after self, x and the inputs
  block = nn.remat(block_cls, static_argnums=(deterministic_arg,)) if cfg.remat else block_cls
  return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=(nn.broadcast,) * (num_inputs + 1), length=cfg.num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name=name)
