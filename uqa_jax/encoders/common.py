"""Small pieces several encoders share: attention by platform, dense layers with logical axes, layer stacking."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders.config import ATTENTION_IMPLS


def dense(features, axes, cfg, use_bias=True, name=None, kernel_init=None, bias_init=None,
          dtype=None):
  """nn.Dense whose kernel carries logical axis names (see uqa_jax.runtime.parallel.RULES).

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




def attention_impl(cfg) -> str:
  """The attention kernel `cfg.attention_impl` names, "auto" resolved for this platform and dtype.

  auto: Trm++ / SASRec use cuDNN's fused attention on a GPU when they compute in bfloat16 or
  float16 (cuDNN has no float32 kernel) and XLA's otherwise; HSTU uses the plain XLA reference
  (the Pallas kernel is opt-in until benchmarks/gpu_check.sh has verified it on a GPU).
  """
  allowed = ATTENTION_IMPLS[cfg.name]
  if cfg.attention_impl not in ("auto",) + allowed:
    raise ValueError(f"encoder.attention_impl={cfg.attention_impl!r}: {cfg.name} offers "
                     f"{', '.join(('auto',) + allowed)}")
  if cfg.attention_impl != "auto":
    return cfg.attention_impl
  if "cudnn" in allowed and jax.default_backend() == "gpu" and jnp.dtype(cfg.dtype) in (jnp.bfloat16, jnp.float16):
    return "cudnn"
  return "xla"


def causal_attention(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, lengths_B, impl: str):
  """Softmax attention, causal, keys past each row's length masked (right padding), by `impl`.

  With right padding causality alone keeps every valid query off padded keys; the lengths
  only matter to padded queries (whose outputs nothing reads) and to cuDNN's kernel selection.
  """
  with jax.named_scope("attention"):
    return jax.nn.dot_product_attention(q_BxLxHxE, k_BxLxHxE, v_BxLxHxE, is_causal=True,
                                        key_value_seq_lengths=lengths_B.astype(jnp.int32), implementation=impl)


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
