"""The fused Pallas HSTU attention equals the plain jnp reference, forward and every gradient.

Interpret mode on CPU, compiled on a GPU (benchmarks/gpu_check.sh) (float32, 1e-5): ragged lengths with padding, a length that is not a
multiple of the block, with and without the time bias; the gradients reach the relative-bias
and time-bias tables the model learns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax.encoders import hstu
from uqa_jax.encoders import hstu_pallas

B, H, E, MAX_LEN, T = 3, 2, 16, 64, 32  # E, blocks >= 16: Triton's smallest dot


def _inputs(length, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 6)
  q, k, v = (jax.random.normal(x, (B, length, H, E)) for x in ks[:3])
  rab_table = 0.3 * jax.random.normal(ks[3], (H, MAX_LEN))
  time_table = 0.3 * jax.random.normal(ks[4], (H, T))
  lengths = jnp.array([length, length - 7, 5])  # ragged: full, mid, short; the rest is padding
  mask = (jnp.arange(length)[None] < lengths[:, None]).astype(jnp.int32)
  # seconds between clicks (0 included): gaps of 1 s .. ~8 min give buckets 0..20 of the 32
  gaps = jax.random.randint(ks[5], (B, length), 0, 20)
  return q, k, v, rab_table, time_table, mask, jnp.cumsum(gaps, axis=1).astype(jnp.int32)


def _reference(q, k, v, rab_table, time_table, mask, ts, use_time):
  length = q.shape[1]
  rab = hstu.relative_bias(rab_table, length, MAX_LEN)[None]
  if use_time:
    rab = rab + jnp.moveaxis(time_table[:, hstu.time_buckets(ts, T)], 0, 1)
  return hstu.hstu_attention(q, k, v, rab, mask, MAX_LEN)


def _fused(q, k, v, rab_table, time_table, mask, ts, use_time, block=16):
  rab = hstu.relative_bias(rab_table, q.shape[1], MAX_LEN)
  return hstu_pallas.hstu_attention(q, k, v, rab, mask, MAX_LEN, ts if use_time else None,
                                    time_table if use_time else None, block=block)  # interpret on CPU


@pytest.mark.parametrize("length,use_time,block", [
    (48, True, 16), (40, True, 16), (40, True, 128),
    # without time only the time-bias branches are skipped (the layer test runs it forward): slow
    pytest.param(48, False, 16, marks=pytest.mark.slow)])
def test_fused_equals_reference_forward_and_gradients(length, use_time, block):
  """block 16: several blocks per row, causal skipping, the last block part padding; block 128
  (the default) shrinks to 64, the length's next power of two: one block, padded."""
  q, k, v, rab_table, time_table, mask, ts = _inputs(length)
  cot = jax.random.normal(jax.random.PRNGKey(9), (B, length, H, E))
  valid = mask[:, :, None, None]  # padded query rows are nobody's output

  def loss(fn):
    return lambda *a: jnp.sum(fn(*a, mask, ts, use_time) * cot * valid)

  fused_fn = lambda *a: _fused(*a, block=block)
  ref, fused = _reference(q, k, v, rab_table, time_table, mask, ts, use_time), \
      fused_fn(q, k, v, rab_table, time_table, mask, ts, use_time)
  np.testing.assert_allclose(fused * valid, ref * valid, atol=1e-5, rtol=1e-5)
  g_ref = jax.grad(loss(_reference), argnums=(0, 1, 2, 3, 4))(q, k, v, rab_table, time_table)
  g_fused = jax.grad(loss(fused_fn), argnums=(0, 1, 2, 3, 4))(q, k, v, rab_table, time_table)
  for name, a, b in zip(["q", "k", "v", "rab table", "time table"], g_fused, g_ref):
    assert np.abs(np.asarray(b)).max() > 0 or (name == "time table" and not use_time), name
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)


def test_the_test_data_spans_many_time_buckets():
  *_, mask, ts = _inputs(48)
  assert len(np.unique(np.asarray(hstu.time_buckets(ts, T)))) >= 15


def test_the_time_bias_changes_the_output():
  """A check that the kernel reads the time table at all (the equality test alone would pass a
  kernel that ignored time if the reference did too)."""
  q, k, v, rab_table, time_table, mask, ts = _inputs(32)
  with_time = _fused(q, k, v, rab_table, time_table, mask, ts, True)
  without = _fused(q, k, v, rab_table, time_table, mask, ts, False)
  assert float(jnp.abs(with_time - without).max()) > 1e-3


def test_block_must_be_a_power_of_two_of_at_least_16():
  q, k, v, rab_table, _, mask, _ = _inputs(16)
  with pytest.raises(ValueError, match="block=24; expected a power of two >= 16"):
    hstu_pallas.hstu_attention(q, k, v, hstu.relative_bias(rab_table, 16, MAX_LEN), mask, MAX_LEN, block=24)


def test_timestamps_without_a_table_is_an_error():
  q, k, v, rab_table, _, mask, ts = _inputs(16)
  with pytest.raises(ValueError, match="both timestamps_BxL and time_table_HxT"):
    hstu_pallas.hstu_attention(q, k, v, hstu.relative_bias(rab_table, 16, MAX_LEN), mask, MAX_LEN, ts)
