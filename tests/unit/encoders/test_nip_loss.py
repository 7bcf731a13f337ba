"""NIP losses: chunked SL equals the full softmax (values and gradients); CL and targets behave."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax.encoders import nip_loss


def _data(n=24, e=8, v=1001, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  q = jax.random.normal(k1, (n, e))
  table = jax.random.normal(k2, (v, e))
  targets = jax.random.randint(k3, (n,), 1, v)
  weights = jnp.ones(n).at[-5:].set(0.0)
  return q, targets, weights, table


@pytest.mark.parametrize("chunk", [64, 100, 1001, 4096])
def test_chunked_sl_equals_naive_full_softmax(chunk):
  q, targets, weights, table = _data()
  np.testing.assert_allclose(nip_loss.sl_loss(q, targets, weights, table, chunk),
                             nip_loss.sl_loss_naive(q, targets, weights, table), rtol=1e-5)
  g_chunk = jax.grad(nip_loss.sl_loss, argnums=(0, 3))(q, targets, weights, table, chunk)
  g_naive = jax.grad(nip_loss.sl_loss_naive, argnums=(0, 3))(q, targets, weights, table)
  for a, b in zip(g_chunk, g_naive):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_sl_gradient_in_the_weights_and_in_bfloat16_equals_the_full_softmax():
  """The hand-written backward pass: the weights' gradient too, and a bfloat16 table and queries
  (cotangents come back in each input's dtype)."""
  q, targets, weights, table = _data()
  weights = weights.at[:4].set(jnp.array([0.5, 2.0, 0.25, 1.5]))
  g_chunk = jax.grad(nip_loss.sl_loss, argnums=2)(q, targets, weights, table, 100)
  g_naive = jax.grad(nip_loss.sl_loss_naive, argnums=2)(q, targets, weights, table)
  np.testing.assert_allclose(g_chunk, g_naive, rtol=1e-4, atol=1e-6)
  q16, t16 = q.astype(jnp.bfloat16), table.astype(jnp.bfloat16)
  g16 = jax.grad(nip_loss.sl_loss, argnums=(0, 3))(q16, targets, weights, t16, 100)
  g32 = jax.grad(nip_loss.sl_loss_naive, argnums=(0, 3))(q16.astype(jnp.float32), targets, weights,
                                                         t16.astype(jnp.float32))
  for a, b in zip(g16, g32):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(a.astype(jnp.float32), b, rtol=2e-2, atol=2e-3)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule; accelerators take ACCELERATOR_CHUNK")
def test_default_chunk_keeps_cpu_logit_blocks_cache_sized():
  assert nip_loss.default_chunk(4096) == 128  # the issue-14 step: B·L = 8 x 512
  assert nip_loss.default_chunk(1000) == 512  # largest power of two with N·C <= 2^19
  assert nip_loss.default_chunk(10 ** 6) == 128  # never below 128
  assert nip_loss.default_chunk(1) == 1 << 19


def _all_sizes(jaxpr):
  """Sizes of every value a jaxpr computes, inside scan/loop/checkpoint bodies too."""
  sizes = []
  for eqn in jaxpr.eqns:
    sizes += [v.aval.size for v in eqn.outvars if hasattr(v.aval, "size")]
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          sizes += _all_sizes(inner)
  return sizes


def test_chunked_sl_never_materialises_the_full_logits():
  q, targets, weights, table = _data(n=32, v=5000)
  jaxpr = jax.make_jaxpr(jax.grad(lambda t: nip_loss.sl_loss(q, targets, weights, t, 500)))(table)
  sizes = _all_sizes(jaxpr.jaxpr)
  assert len(sizes) > len(jaxpr.jaxpr.eqns)  # the scan bodies were walked
  # Nothing of [N, V] = 160,000 elements: the table itself (40,000) and chunk-sized [N, C] buffers.
  assert max(sizes) <= max(table.size, 32 * 500)


def test_padding_item_is_never_a_candidate():
  q, targets, weights, table = _data(v=50)
  boosted = table.at[0].set(q.mean(0) * 100)  # item 0 would dominate if it were a candidate
  np.testing.assert_allclose(nip_loss.sl_loss(q, targets, weights, boosted, 16),
                             nip_loss.sl_loss(q, targets, weights, table, 16), rtol=1e-6)


def test_rows_past_num_items_are_never_candidates_and_get_no_gradient():
  q, targets, weights, table = _data(v=1001)
  padded = jnp.concatenate([table, 100 * jax.random.normal(jax.random.PRNGKey(9), (23, table.shape[1]))])
  np.testing.assert_allclose(nip_loss.sl_loss(q, targets, weights, padded, 100, num_items=1001),
                             nip_loss.sl_loss_naive(q, targets, weights, table), rtol=1e-5)
  grad = jax.grad(nip_loss.sl_loss, argnums=3)(q, targets, weights, padded, 100, num_items=1001)
  assert np.all(np.asarray(grad[1001:]) == 0)


def test_cl_loss_prefers_the_matching_item():
  q, targets, weights, table = _data(n=16, v=500)
  aligned = table[targets]  # queries pointing at their own targets
  key = jax.random.PRNGKey(0)
  good = nip_loss.cl_loss(aligned, targets, weights, table, key, num_negatives=64, temperature=0.1)
  bad = nip_loss.cl_loss(q, targets, weights, table, key, num_negatives=64, temperature=0.1)
  assert np.isfinite(good) and good < bad


@pytest.mark.parametrize("chunk", [5, 16, 24, 100])
def test_chunked_cl_equals_the_full_in_batch_matrix(chunk):
  q, targets, weights, table = _data(n=24, v=30)  # few items: repeated targets are masked too
  targets = targets.at[3].set(targets[7])
  key = jax.random.PRNGKey(1)
  kw = dict(num_negatives=16, temperature=0.1)
  np.testing.assert_allclose(nip_loss.cl_loss(q, targets, weights, table, key, chunk=chunk, **kw),
                             nip_loss.cl_loss_naive(q, targets, weights, table, key, **kw), rtol=1e-5)
  g = jax.grad(lambda a, t: nip_loss.cl_loss(a, targets, weights, t, key, chunk=chunk, **kw), (0, 1))(q, table)
  g_ref = jax.grad(lambda a, t: nip_loss.cl_loss_naive(a, targets, weights, t, key, **kw), (0, 1))(q, table)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_cl_never_materialises_the_in_batch_matrix():
  q, targets, weights, table = _data(n=600, v=50)
  key = jax.random.PRNGKey(0)
  f = lambda a: nip_loss.cl_loss(a, targets, weights, table, key, num_negatives=8, chunk=50)
  jaxpr = jax.make_jaxpr(jax.grad(f))(q)
  sizes = _all_sizes(jaxpr.jaxpr)
  assert len(sizes) > len(jaxpr.jaxpr.eqns)  # the scan bodies were walked
  assert max(sizes) <= 600 * 50 < 600 * 600  # [N, C] buffers, never [N, N]


def test_shifted_targets_mask_padding_and_the_last_step():
  items = jnp.array([[5, 6, 7, 0], [1, 2, 3, 4]])
  targets, weights = nip_loss.shifted_targets(items, jnp.array([3, 4]))
  np.testing.assert_array_equal(targets, [[6, 7, 0, 0], [2, 3, 4, 0]])
  np.testing.assert_array_equal(weights, [[1, 1, 0, 0], [1, 1, 1, 0]])
