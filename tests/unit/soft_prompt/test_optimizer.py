"""Stage 2's optimizer: one AdamW chain with a learning rate per parameter group equals optax's
`multi_transform` of `adamw` per group, and the LLM's frozen first steps delay only its schedule."""

import jax
import numpy as np
import optax
import pytest

from uqa_jax.config.recipes import AlignConfig
from uqa_jax.soft_prompt import optimizer


def test_optimizer_equals_optax_adamw_per_group():
  """Our clip -> Adam -> decay -> per-group rate chain == optax.multi_transform of adamw per group."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-4, weight_decay=0.1,
                  schedule="warmup_cosine", warmup_steps=2, grad_clip=0.5)
  rng = np.random.default_rng(0)
  params = {"adapter": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
            "llm": {"a": rng.normal(size=(5,)).astype(np.float32), "b": rng.normal(size=(2, 2)).astype(np.float32)}}
  sched = lambda lr: optax.warmup_cosine_decay_schedule(0.0, lr, 2, 10, end_value=lr * 0.1)
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.multi_transform(
      {"adapter": optax.adamw(sched(1e-2), b1=0.9, b2=0.98, weight_decay=0.1),
       "llm": optax.adamw(sched(1e-4), b1=0.9, b2=0.98, weight_decay=0.1)},
      {"adapter": {"w": "adapter"}, "llm": {"a": "llm", "b": "llm"}}))
  ours = optimizer.make_optimizer(a, total_steps=10)
  p_ref, p_ours = params, params
  s_ref, s_ours = reference.init(params), ours.init(params)
  for _ in range(5):
    grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    u, s_ref = reference.update(grads, s_ref, p_ref)
    p_ref = optax.apply_updates(p_ref, u)
    u, s_ours = ours.update(grads, s_ours, p_ours)
    p_ours = optax.apply_updates(p_ours, u)
  for x, y in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_llm_frozen_steps_hold_the_llm_then_start_its_schedule():
  """An adapter-only warm-up: the LLM's rate is 0 for the first steps, then its own warm-up and
  cosine run over the remaining steps; the adapter's schedule is not delayed."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-4, schedule="warmup_cosine",
                  warmup_steps=2, llm_frozen_steps=3)
  params = {"adapter": {"w": np.ones(3, np.float32)}, "llm": {"a": np.ones(2, np.float32)}}
  tx = optimizer.make_optimizer(a, total_steps=10)
  state, p = tx.init(params), params
  moved = []
  for _ in range(6):
    grads = jax.tree.map(np.ones_like, params)
    u, state = tx.update(grads, state, p)
    moved.append({g: float(np.abs(np.asarray(u[g][k])).max()) for g, k in (("adapter", "w"), ("llm", "a"))})
    p = optax.apply_updates(p, u)
  llm_rate = optax.warmup_cosine_decay_schedule(0.0, 1e-4, 2, 7, end_value=1e-5)
  adapter_rate = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10, end_value=1e-3)
  for step, m in enumerate(moved):  # Adam's |m / sqrt(v)| is 1 under constant gradients
    assert m["llm"] == pytest.approx(0.0 if step < 3 else float(llm_rate(step - 3)), abs=1e-9), step
    assert m["adapter"] == pytest.approx(float(adapter_rate(step)), rel=1e-4, abs=1e-9), step
  assert moved[4]["llm"] > 0
  with pytest.raises(ValueError, match="llm_frozen_steps=3 needs mode='full'"):
    AlignConfig(mode="adapter", llm_frozen_steps=3)
