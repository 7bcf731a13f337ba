"""Adapters: padding never matters (not even NaN there), `mean` and `recent` equal NumPy
references, Q-Former stays finite on all-padding rows, tokens start at the LLM's embedding RMS."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax import adapters
from uqa_jax.adapters import common
from uqa_jax.adapters.config import AdapterConfig, check_reads

B, L, D, M = 3, 10, 12, 16
LENGTHS = [10, 4, 1]


def _cfg(name, **kw):
  return AdapterConfig(name=name, d_llm=M, embed_rms=0.7, **kw)


def _inputs(seed=0):
  states = jax.random.normal(jax.random.PRNGKey(seed), (B, L, D))
  mask = (jnp.arange(L)[None, :] < jnp.array(LENGTHS)[:, None]).astype(jnp.int32)
  return states, mask


def _setup(name, **kw):
  cfg = _cfg(name, **kw)
  model = adapters.get(name)(cfg)
  states, mask = _inputs()
  return cfg, model, nn.unbox(model.init(jax.random.PRNGKey(1), states, mask)), states, mask


def _rms_norm(x, scale, eps=1e-6):
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale


@pytest.mark.parametrize("name", adapters.NAMES)
def test_shape_dtype_and_padding_never_matter_not_even_nan(name):
  cfg, model, params, states, mask = _setup(name)
  out = model.apply(params, states, mask)
  assert out.shape == (B, adapters.num_tokens(cfg), M) and out.dtype == jnp.float32
  valid = np.asarray(mask, bool)[..., None]
  for fill in (7.0, np.nan, np.inf):
    garbage = jnp.where(valid, states, fill)
    np.testing.assert_array_equal(model.apply(params, garbage, mask), out)


@pytest.mark.parametrize("name", adapters.NAMES)
def test_tokens_start_at_the_llm_embedding_rms(name):
  cfg, model, params, states, mask = _setup(name)
  rms = np.sqrt(np.mean(np.square(np.asarray(model.apply(params, states, mask))), -1))
  # every token, a short row's empty `recent` slots included (they hold the bias token)
  np.testing.assert_allclose(rms, np.full(rms.shape, cfg.embed_rms), rtol=1e-3)


@pytest.mark.parametrize("name", adapters.NAMES)
def test_a_zero_input_gives_token_sized_soft_tokens_not_exact_zeros(name):
  """The `zeros` control feeds zero states. An exactly zero soft token stays zero through the LLM
  while every RMSNorm's Jacobian there is 1/sqrt(eps): 30 layers overflow the gradient to NaN."""
  cfg, model, params, states, mask = _setup(name)
  out = np.asarray(model.apply(params, jnp.zeros_like(states), jnp.ones_like(mask)))
  np.testing.assert_allclose(np.sqrt(np.mean(out ** 2, -1)), cfg.embed_rms, rtol=1e-3)


def test_mean_equals_the_per_position_map_then_the_masked_mean():
  """The official definition: project every valid state, average the projections."""
  cfg, model, params, states, mask = _setup("mean")
  p = jax.tree.map(np.asarray, params["params"])
  s = np.asarray(states, np.float64)
  want = []
  for b, n in enumerate(LENGTHS):
    projected = s[b, :n] @ p["proj"]["kernel"] + p["proj"]["bias"]  # [n, M], per position
    want.append(_rms_norm(projected.mean(0), p["out_norm"]["scale"]))
  np.testing.assert_allclose(np.asarray(model.apply(params, states, mask))[:, 0], want, rtol=1e-5, atol=1e-6)


def test_recent_gives_the_mean_then_the_last_valid_states_oldest_first():
  cfg, model, params, states, mask = _setup("recent", num_tokens=3)
  p = jax.tree.map(np.asarray, params["params"])
  s = np.asarray(states, np.float64)
  out = np.asarray(model.apply(params, states, mask))
  for b, n in enumerate(LENGTHS):
    recent = [s[b, t] if t >= 0 else np.zeros(D) for t in range(n - 3, n)]  # short rows: zeros first
    rows = np.stack([s[b, :n].mean(0), *recent]) @ p["proj"]["kernel"] + p["proj"]["bias"]
    np.testing.assert_allclose(out[b], _rms_norm(rows, p["out_norm"]["scale"]), rtol=1e-5, atol=1e-6)


def test_mlp_pools_the_last_valid_state_when_asked():
  cfg, model, params, states, mask = _setup("mlp", pool="last", num_tokens=2)
  bump = jax.random.normal(jax.random.PRNGKey(9), (D,))  # not a constant shift: LayerNorm removes those
  moved = states.at[1, 3].add(bump)  # row 1's last valid state (length 4)
  earlier = states.at[1, 2].add(bump)
  out = model.apply(params, states, mask)
  assert not np.allclose(model.apply(params, moved, mask)[1], out[1])
  np.testing.assert_array_equal(model.apply(params, earlier, mask), out)


def test_qformer_is_finite_on_all_padding_rows_with_nan_there_forward_and_backward():
  cfg, model, params, states, _ = _setup("qformer", num_queries=5)
  mask = jnp.zeros((B, L), jnp.int32).at[0, :3].set(1)  # rows 1 and 2: no valid step at all
  poisoned = jnp.where(mask[..., None].astype(bool), states, jnp.nan)
  out = jax.jit(model.apply)(params, poisoned, mask)  # jitted: one compilation, not op-by-op dispatch
  assert out.shape == (B, 5, M) and np.isfinite(np.asarray(out)).all()
  loss = lambda p, x: jnp.sum(model.apply(p, x, mask) ** 2)
  g_params, g_states = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, poisoned)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(g_params))
  assert np.isfinite(np.asarray(g_states)[np.asarray(mask, bool)]).all()
  np.testing.assert_array_equal(np.asarray(g_states)[~np.asarray(mask, bool)], 0.0)


def test_qformer_queries_start_small_and_padding_is_masked_in_cross_attention():
  cfg, model, params, states, mask = _setup("qformer")
  queries = np.asarray(params["params"]["queries"])
  assert queries.shape == (16, 256) and 0.015 < queries.std() < 0.025
  # A valid state does change the output (the cross-attention reads the history).
  changed = states.at[0, 5].add(jax.random.normal(jax.random.PRNGKey(9), (D,)))
  assert not np.allclose(model.apply(params, changed, mask)[0], model.apply(params, states, mask)[0])


def test_unknown_adapter_and_dead_settings_are_refused():
  with pytest.raises(ValueError, match="expected one of mean, mlp, recent, qformer"):
    adapters.get("perceiver")
  with pytest.raises(ValueError, match=r"adapter.num_queries=8: not read by adapter 'mean'"):
    check_reads(_cfg("mean", num_queries=8), adapters.reads("mean"))
  check_reads(_cfg("qformer", num_queries=8), adapters.reads("qformer"))
  for name in adapters.NAMES:  # READS names real fields
    assert set(adapters.reads(name)) <= {f.name for f in dataclasses.fields(AdapterConfig)}


def test_each_adapter_reads_exactly_the_fields_it_declares():
  """Changing an undeclared field changes nothing; changing a declared one changes the output."""
  states, mask = _inputs()
  other = {"num_tokens": 2, "pool": "last", "d_hidden": 8, "num_queries": 3, "num_layers": 1,
           "num_heads": 2, "d_model": 32}
  for name in adapters.NAMES:
    base = _cfg(name)
    ref = adapters.get(name)(base)
    out = ref.apply(ref.init(jax.random.PRNGKey(1), states, mask), states, mask)
    for field, value in other.items():
      cfg = dataclasses.replace(base, **{field: value})
      model = adapters.get(name)(cfg)
      changed = model.apply(model.init(jax.random.PRNGKey(1), states, mask), states, mask)
      differs = changed.shape != out.shape or not np.array_equal(changed, out)
      assert differs == (field in adapters.reads(name)), (name, field)
