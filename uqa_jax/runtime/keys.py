"""PRNG keys that cost no executable.

`jax.random.PRNGKey(seed)` runs eagerly: its first call in a process compiles one-op
executables, and a module's `init` run eagerly compiles one per op and shape (about 40 for an
adapter). Here a key's shape comes from `jax.eval_shape` (`abstract`), a seed's key is built on
the host (`host`, checked against `jax.random.PRNGKey` in tests/unit/runtime/test_keys.py), and
an init runs as one jitted executable (`initialise`).
"""

import jax
import numpy as np

_THREEFRY = "threefry2x32"


def abstract() -> jax.ShapeDtypeStruct:
  """The shape and dtype of `jax.random.PRNGKey(seed)`, for `jax.eval_shape` (nothing runs)."""
  return jax.eval_shape(lambda: jax.random.PRNGKey(0))  # a fresh function: the PRNG settings of now


def host(seed: int):
  """`jax.random.PRNGKey(seed)` as a host array, built without running anything on a device:
  the default threefry key of a 32-bit run is [0, seed mod 2**32]. Any other setting (another
  PRNG implementation, 64-bit mode, a seed offset, typed keys) falls back to `jax.random.PRNGKey`."""
  c = jax.config
  if (c.jax_default_prng_impl != _THREEFRY or c.jax_enable_x64 or c.jax_random_seed_offset
      or c.jax_enable_custom_prng):
    return jax.random.PRNGKey(seed)
  return np.array([0, int(seed) % 2**32], np.uint32)


def initialise(init, seed: int):
  """`init(PRNGKey(seed))` as one jitted executable (eagerly each op would compile its own)."""
  return jax.jit(init)(host(seed))
