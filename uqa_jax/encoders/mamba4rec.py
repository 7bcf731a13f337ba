"""Mamba4Rec: Mamba-1 selective SSM blocks plus a position-wise FFN.

Per layer: in-projection to (x, z); causal depthwise conv on x; SiLU; x -> (Δ, B, C);
Δ = softplus(W_Δ Δ_low + b_Δ); A = -exp(A_log); recurrence h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t
(float32, `jax.lax.associative_scan` or `lax.scan` per `encoder.scan_impl`; padding is the
identity a = 1, b = 0);
y = C_t · h_t + D x_t, gated by SiLU(z); out-projection; residual + LayerNorm; then FFN.
Initialisation as Mamba-1 (`mamba_simple.py`): b_Δ = softplus⁻¹(Δ₀) with Δ₀ log-uniform in
[1e-3, 0.1] (floored at 1e-4), so every channel starts with its own time scale; W_Δ uniform in
±R^-0.5; A_log = log(1..N) per channel; D = 1.
Shape letters: B batch, L length, D width, I inner width (expand · D), N state size, R Δ rank.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.runtime import parallel

READS = ("d_ff", "remat", "d_state", "d_conv", "expand", "scan_impl")  # EncoderConfig fields read besides config.COMMON (tested)
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 0.1, 1e-4  # Mamba-1's defaults for the initial Δ


def dt_bias_init(key, shape, dtype=jnp.float32):
  """b_Δ such that softplus(b_Δ) = Δ₀ ~ log-uniform[DT_MIN, DT_MAX] (Mamba-1's inverse softplus)."""
  u = jax.random.uniform(key, shape, jnp.float32)
  dt = jnp.maximum(jnp.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)), DT_FLOOR)
  return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)


def dt_kernel_init(rank: int):
  bound = rank ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _combine(left, right):
  a1, b1 = left
  a2, b2 = right
  return a2 * a1, a2 * b1 + b2


def _scan_forward(a_BxLxIxN, b_BxLxIxN):
  _, h = jax.lax.associative_scan(_combine, (a_BxLxIxN, b_BxLxIxN), axis=1)
  return h


@jax.custom_vjp
def _scan(a_BxLxIxN, b_BxLxIxN):
  return _scan_forward(a_BxLxIxN, b_BxLxIxN)


def _scan_fwd(a_BxLxIxN, b_BxLxIxN):
  h_BxLxIxN = _scan_forward(a_BxLxIxN, b_BxLxIxN)
  return h_BxLxIxN, (a_BxLxIxN, h_BxLxIxN)


def _scan_bwd(residuals, g_BxLxIxN):
  """The adjoint is the same recurrence run backwards: G_t = g_t + a_{t+1} G_{t+1}.

  Then dL/db_t = G_t and dL/da_t = G_t h_{t-1}. Saving only (a, h) instead of every level of
  the forward associative scan keeps the backward pass to one more scan plus elementwise work.
  """
  a_BxLxIxN, h_BxLxIxN = residuals
  a_next = jnp.concatenate([a_BxLxIxN[:, 1:], jnp.ones_like(a_BxLxIxN[:, :1])], axis=1)
  _, g_total = jax.lax.associative_scan(_combine, (a_next, g_BxLxIxN), axis=1, reverse=True)
  h_prev = jnp.concatenate([jnp.zeros_like(h_BxLxIxN[:, :1]), h_BxLxIxN[:, :-1]], axis=1)
  return g_total * h_prev, g_total


_scan.defvjp(_scan_fwd, _scan_bwd)


def selective_scan(a_BxLxIxN, b_BxLxIxN):
  """h_t = a_t h_{t-1} + b_t, h_{-1} = 0, for all t at once (log-depth associative scan, float32)."""
  return _scan(a_BxLxIxN.astype(jnp.float32), b_BxLxIxN.astype(jnp.float32))


def sequential_scan(a_BxLxIxN, b_BxLxIxN):
  """The same recurrence step by step (`lax.scan`): the reference for `selective_scan`."""
  def step(h, ab):
    a, b = ab
    h = a * h + b
    return h, h
  init = jnp.zeros(a_BxLxIxN.shape[:1] + a_BxLxIxN.shape[2:], jnp.float32)
  _, hs = jax.lax.scan(step, init, (jnp.moveaxis(a_BxLxIxN, 1, 0).astype(jnp.float32),
                                    jnp.moveaxis(b_BxLxIxN, 1, 0).astype(jnp.float32)))
  return jnp.moveaxis(hs, 0, 1)


SCANS = {"associative": selective_scan, "sequential": sequential_scan}


def scan_fn(cfg):
  """The scan `cfg.scan_impl` names; "auto" is sequential on CPU and associative elsewhere.

  On a 2-core CPU the step-by-step scan is faster from 128 steps up, forward and backward
  ([2, L, 1024, 16]: the associative one takes 1.3-1.9x as long at L = 128..2048; at L = 64 the
  two are within 10%; benchmarks/scan.py): there is no parallelism for the log-depth tree to use,
  and its up- and down-sweeps read and write the [B, L, I, N] tensors several times over
  (strided slices, pads and interleaves) where the sequential scan streams each [B, I, N]
  step once, in cache. On GPUs and TPUs the tree's parallelism over L is the point.
  """
  if cfg.scan_impl not in ("auto",) + tuple(SCANS):
    raise ValueError(f"encoder.scan_impl={cfg.scan_impl!r}: expected auto, {', '.join(SCANS)}")
  name = cfg.scan_impl
  if name == "auto":
    name = "sequential" if jax.default_backend() == "cpu" else "associative"
  return SCANS[name]


class CausalConv(nn.Module):
  """Depthwise causal convolution over time: y_t = bias + sum_k w_k * x_{t-K+1+k}.

  Written as K shifted multiply-adds: on CPU this is ~10x faster than a grouped `nn.Conv`
  (forward and backward), and the kernel carries logical axis names like every parameter.
  """
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxI):
    c = self.cfg
    inner, length = x_BxLxI.shape[-1], x_BxLxI.shape[1]
    w_KxI = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=1),
        ("ssm", "mlp")), (c.d_conv, inner), jnp.dtype(c.param_dtype))
    bias_I = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                        (inner,), jnp.dtype(c.param_dtype))
    padded = jnp.pad(x_BxLxI, ((0, 0), (c.d_conv - 1, 0), (0, 0)))
    w_KxI = w_KxI.astype(x_BxLxI.dtype)
    out = sum(padded[:, k:k + length] * w_KxI[k] for k in range(c.d_conv))
    return out + bias_I.astype(x_BxLxI.dtype)


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic):
    c = self.cfg
    inner, n = c.expand * c.d_model, c.d_state
    rank = math.ceil(c.d_model / 16)
    x_BxLxD = parallel.constrain(x_BxLxD, common.BLD)
    xz = common.dense(2 * inner, ("embed", "mlp"), c, use_bias=False, name="in_proj")(x_BxLxD)
    x, z = jnp.split(xz, 2, axis=-1)
    x = CausalConv(c, name="conv")(x)
    x_BxLxI = nn.silu(x)
    dbc = common.dense(rank + 2 * n, ("mlp", "ssm"), c, use_bias=False, name="x_proj")(x_BxLxI)
    dt_low, b_BxLxN, c_BxLxN = jnp.split(dbc, [rank, rank + n], axis=-1)
    dt_proj = common.dense(inner, ("ssm", "mlp"), c, name="dt_proj", kernel_init=dt_kernel_init(rank),
                           bias_init=dt_bias_init, dtype=jnp.float32)  # Δ in float32, bias included
    dt_BxLxI = nn.softplus(dt_proj(dt_low.astype(jnp.float32)))
    a_log = self.param("A_log", nn.with_logical_partitioning(
        lambda key, shape, dtype: jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=dtype), shape)),
        ("mlp", "ssm")), (inner, n), jnp.float32)
    d_skip = self.param("D", nn.with_logical_partitioning(nn.initializers.ones, ("mlp",)), (inner,), jnp.float32)
    valid = mask_BxL.astype(bool)[:, :, None, None]
    a = jnp.where(valid, jnp.exp(dt_BxLxI[..., None] * -jnp.exp(a_log)), 1.0)
    b = jnp.where(valid, dt_BxLxI[..., None] * b_BxLxN[:, :, None, :] * x_BxLxI[..., None], 0.0)
    h_BxLxIxN = scan_fn(c)(a, b)
    y = jnp.einsum("blin,bln->bli", h_BxLxIxN, c_BxLxN.astype(jnp.float32)) + d_skip * x_BxLxI
    y = (y * nn.silu(z)).astype(x_BxLxD.dtype)
    out = common.dense(c.d_model, ("mlp", "embed"), c, use_bias=False, name="out_proj")(y)
    x_BxLxD = common.layer_norm("ssm_norm")(x_BxLxD + nn.Dropout(c.dropout)(out, deterministic=deterministic))
    f = nn.gelu(common.dense(c.ff, ("embed", "mlp"), c, name="ff1")(x_BxLxD))
    f = common.dense(c.d_model, ("mlp", "embed"), c, name="ff2")(nn.Dropout(c.dropout)(f, deterministic=deterministic))
    return common.layer_norm("ff_norm")(x_BxLxD + nn.Dropout(c.dropout)(f, deterministic=deterministic)), None


class Model(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxL, deterministic=True, timestamps_BxL=None):
    del timestamps_BxL  # no time signal in this encoder
    x, _ = common.stack(Block, self.cfg)(x_BxLxD, mask_BxL, deterministic)
    return x
