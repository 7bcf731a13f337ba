"""Matmul FLOP counting on jaxprs: loop trip counts included, unlike XLA's cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from uqa_jax.runtime import flops

X = jnp.ones((16, 16))
MATMUL = 2 * 16 ** 3


def _scan(x):
  return jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=7)[0]


def test_scan_body_counts_once_per_step_and_gradients_add_two_matmuls_per_matmul():
  assert flops.matmul_flops(_scan, X) == 7 * MATMUL
  assert flops.matmul_flops(jax.grad(lambda x: _scan(x).sum()), X) == 3 * 7 * MATMUL


def test_batched_contractions_remat_and_jit_are_walked():
  q, k = jnp.ones((2, 5, 3, 4)), jnp.ones((2, 6, 3, 4))
  assert flops.matmul_flops(lambda a, b: jnp.einsum("bqhe,bkhe->bhqk", a, b), q, k) == 2 * 2 * 5 * 6 * 3 * 4
  assert flops.matmul_flops(jax.jit(jax.checkpoint(lambda a: jnp.sin(a @ a))), X) == MATMUL


def test_while_loops_are_refused_not_undercounted():
  fn = lambda x: jax.lax.while_loop(lambda c: c[0, 0] < 5, lambda c: c @ x, x)
  with pytest.raises(ValueError, match="while loop"):
    flops.matmul_flops(fn, X)
