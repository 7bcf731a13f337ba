"""Matmul FLOPs of a JAX function, counted on its jaxpr with loop trip counts.

XLA's `cost_analysis()` counts a while loop's body once, so anything under `lax.scan`
(`nn.scan`-stacked layers, a GRU's time loop) is undercounted by its trip count. Here every
`dot_general` counts 2·|lhs|·|rhs free dims| FLOPs, a `scan` multiplies its body by its length,
and every other sub-jaxpr (jit, remat, custom_vjp, cond branches: the largest) is walked
once. Elementwise work is not counted: the figure is the "model FLOPs" that utilisation is
usually quoted against. A leaf module (imports only jax), used by `benchmarks/`.
"""

import math

import jax
from jax.extend import core


def _sub_jaxprs(params):
  for value in params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(v, core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, core.Jaxpr):
        yield v


def _dot_flops(eqn):
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2 * math.prod(lhs) * math.prod(rhs_free)


def jaxpr_matmul_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_matmul_flops(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(jaxpr_matmul_flops(b.jaxpr) for b in eqn.params["branches"])
    elif name == "while":
      raise ValueError("matmul_flops: a while loop has no static trip count; use lax.scan")
    else:
      total += sum(jaxpr_matmul_flops(j) for j in _sub_jaxprs(eqn.params))
  return total


def matmul_flops(fn, *args) -> int:
  """Matmul FLOPs of one call `fn(*args)` (traced, not run)."""
  return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)
