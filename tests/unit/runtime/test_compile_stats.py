"""Compilation accounting counts what JAX reports: one executable per new shape, none for a call
that reuses one, the compile seconds inside the wall time, nothing after the collector closes."""

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.runtime import compile_stats


def test_each_new_shape_is_one_executable_and_a_reused_one_is_none():
  f = jax.jit(lambda x: jnp.sin(x) * 2 + 1)
  a3, b3, a5 = np.ones(3, np.float32), np.zeros(3, np.float32), np.ones(5, np.float32)  # host inputs: no fills
  with compile_stats.Collector() as c:
    f(a3).block_until_ready()
    f(b3).block_until_ready()  # same shape: no compile
    f(a5).block_until_ready()  # a new shape: one more
  s = c.summary()
  assert s["executables"] == 2, s
  assert 0 < s["compile_seconds"] <= s["seconds"], s
  f(np.ones(7, np.float32)).block_until_ready()  # after the collector closed: not counted
  assert c.summary()["executables"] == 2
  assert "compiled 2 XLA executables in" in c.describe()


def test_nothing_compiled_is_zero():
  x = np.ones(4)
  with compile_stats.Collector() as c:
    x.sum()  # NumPy: no XLA at all
  assert c.summary()["executables"] == 0 and c.summary()["compile_seconds"] == 0.0
