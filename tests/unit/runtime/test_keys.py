"""Host-built keys equal jax.random.PRNGKey's, and an init through `keys` compiles once."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from uqa_jax.runtime import compile_stats
from uqa_jax.runtime import keys


@pytest.mark.parametrize("seed", [0, 1, 7, 43, 2**31 - 1, 2**31, 2**32 + 5, -1, -2**31, 2**63 - 1])
def test_host_key_is_jax_prngkey(seed):
  want = np.asarray(jax.random.PRNGKey(seed))
  got = keys.host(seed)
  assert isinstance(got, np.ndarray) and got.dtype == want.dtype
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("setting, value", [("jax_random_seed_offset", 7), ("jax_enable_x64", True),
                                            ("jax_default_prng_impl", "rbg"), ("jax_enable_custom_prng", True)])
def test_other_prng_settings_get_jax_prngkey_itself(setting, value):
  before = getattr(jax.config, setting)
  jax.config.update(setting, value)
  try:
    for seed in (0, 5, 2**31 + 3):
      want, got = jax.random.PRNGKey(seed), keys.host(seed)
      assert (got.shape, got.dtype) == (want.shape, want.dtype) == (keys.abstract().shape, keys.abstract().dtype)
      np.testing.assert_array_equal(jax.random.key_data(got) if setting == "jax_enable_custom_prng" else got,
                                    jax.random.key_data(want) if setting == "jax_enable_custom_prng" else want)
  finally:
    jax.config.update(setting, before)


def test_abstract_key_matches_a_real_one():
  real = jax.random.PRNGKey(3)
  assert (keys.abstract().shape, keys.abstract().dtype) == (real.shape, real.dtype)


class _Two(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.LayerNorm()(nn.Dense(3)(x)).mean()


def test_initialise_equals_eager_init_and_compiles_one_executable():
  x = np.ones((2, 4), np.float32)
  init = lambda key: _Two().init(key, x)["params"]
  want = init(jax.random.PRNGKey(5))  # eager: one executable per op
  with compile_stats.Collector() as stats:
    got = keys.initialise(init, 5)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert stats.summary()["executables"] == 1, stats.summary()
