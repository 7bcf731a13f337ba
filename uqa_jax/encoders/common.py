"""Small pieces several encoders share: masks, dense layers with logical axes, layer stacking."""

import flax.linen as nn
import jax.numpy as jnp


def dense(features, axes, cfg, use_bias=True, name=None, kernel_init=None, bias_init=None,
          dtype=None):
  """nn.Dense whose kernel carries logical axis names (see uqa_jax.parallel.RULES).

  `kernel_init` defaults to LeCun normal; a given `bias_init` is named by the kernel's last axis;
  `dtype` (the computation's) defaults to `cfg.dtype`.
  """
  extra = {} if bias_init is None else {
      "bias_init": nn.with_logical_partitioning(bias_init, axes[-1:])}
  return nn.Dense(features, use_bias=use_bias, dtype=jnp.dtype(dtype or cfg.dtype),
                  param_dtype=jnp.dtype(cfg.param_dtype),
                  kernel_init=nn.with_logical_partitioning(kernel_init or nn.initializers.lecun_normal(), axes),
                  name=name, **extra)


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
