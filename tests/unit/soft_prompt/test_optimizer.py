"""Stage 2's optimizer: one AdamW chain with a learning rate per parameter group equals optax's
`multi_transform` of `adamw` per group, and the LLM's frozen first steps delay only its schedule."""

import re

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
                  warmup_steps=2, llm_frozen_steps=3, grad_clip=1e3)  # no clipping: Adam's ratio stays 1 (the
  # clip sees the LLM's gradient only from its phase on: test_train_step)
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


def test_llm_steps_train_the_llm_first_then_freeze_it_bit_for_bit():
  """The official recipe after a format phase: the LLM trains for its first steps (its warm-up and
  cosine spanning them), then its rate is 0 and its parameters never move again (weight decay
  included); the adapter's schedule runs over the whole run."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-4, schedule="warmup_cosine",
                  warmup_steps=1, llm_steps=4, weight_decay=0.1)
  params = {"adapter": {"w": np.ones(3, np.float32)}, "llm": {"a": np.ones(2, np.float32)}}
  tx = optimizer.make_optimizer(a, total_steps=10)
  state, p = tx.init(params), params
  rng = np.random.default_rng(1)
  llm_after, moved = [], []
  for _ in range(10):
    grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    u, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, u)
    moved.append(float(np.abs(np.asarray(u["llm"]["a"])).max()))
    llm_after.append(np.asarray(p["llm"]["a"]).copy())
  rates = optimizer.schedules(a, 10)
  llm_rate = optax.warmup_cosine_decay_schedule(0.0, 1e-4, 1, 4, end_value=1e-5)
  for step in range(10):
    assert float(rates["llm"](step)) == pytest.approx(float(llm_rate(step)) if step < 4 else 0.0, abs=1e-12), step
  assert all(m > 0 for m in moved[1:4]) and moved[0] == 0.0  # step 0: warm-up's rate 0
  for later in llm_after[4:]:
    np.testing.assert_array_equal(later, llm_after[3])  # frozen from step 4 on, exactly
  adapter_rate = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 1, 10, end_value=1e-3)
  assert float(rates["adapter"](7)) == pytest.approx(float(adapter_rate(7)))
  with pytest.raises(ValueError, match="llm_steps=4 needs mode='full'"):
    AlignConfig(mode="adapter", llm_steps=4)
  with pytest.raises(ValueError, match="llm_steps=2 with warmup_steps=2"):
    AlignConfig(mode="full", schedule="warmup_cosine", warmup_steps=2, llm_steps=2)


@pytest.mark.parametrize("fields,message", [
    ({"llm_frozen_steps": 8, "warmup_steps": 2}, "llm_frozen_steps=8: with the LLM's warm-up it leaves no step of the run's 10"),
    ({"llm_steps": 10, "warmup_steps": 2}, "llm_steps=10: with llm_frozen_steps=0 it reaches the run's end (10 steps)"),
    ({"llm_frozen_steps": 3, "llm_steps": 7, "warmup_steps": 2}, "llm_steps=7: with llm_frozen_steps=3 it reaches"),
    ({"warmup_steps": 10}, "warmup_steps=10: not below the run's 10 steps"),
])
def test_phases_that_do_not_fit_the_run_are_refused_by_key(fields, message):
  from uqa_jax.config import blocks
  a = AlignConfig(mode="full", schedule="warmup_cosine", **fields)
  with pytest.raises(blocks.ConfigError, match=re.escape(message)):
    optimizer.check_timing(a, total_steps=10)
  optimizer.check_timing(a, total_steps=20)  # a longer run holds them


def test_reconstruction_steps_hold_the_llm_and_run_the_adapter_at_their_own_rate():
  """A reconstruction pre-alignment of 3 steps in a run of 3 + 7: the adapter moves at
  `reconstruct_learning_rate` (constant) for 3 steps, then by its own warm-up and cosine over the
  7 QA steps; the LLM's parameters stay bit for bit during the 3 steps (its weight decay too),
  then its schedule starts (after its own frozen steps, which count from the QA phase)."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-4, schedule="warmup_cosine",
                  warmup_steps=2, weight_decay=0.1, reconstruct_steps=3, reconstruct_learning_rate=5e-3,
                  llm_frozen_steps=1, steps=7, grad_clip=1e3)  # no clipping: Adam's ratio stays 1
  assert a.total_steps(rows=1000) == 10
  params = {"adapter": {"w": np.ones(3, np.float32)}, "llm": {"a": np.ones(2, np.float32)}}
  tx = optimizer.make_optimizer(a, total_steps=10)
  state, p = tx.init(params), params
  adapter_moved, adapter_before, llm_after = [], [], []
  for _ in range(10):
    grads = jax.tree.map(np.ones_like, params)
    adapter_before.append(float(np.asarray(p["adapter"]["w"])[0]))
    u, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, u)
    adapter_moved.append(float(np.asarray(u["adapter"]["w"])[0]))
    llm_after.append(np.asarray(p["llm"]["a"]).copy())
  adapter_qa = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 7, end_value=1e-3)
  llm_qa = optax.warmup_cosine_decay_schedule(0.0, 1e-4, 2, 6, end_value=1e-5)
  # AdamW's update under constant gradients: -rate * (m / sqrt(v) + 0.1 * w), m / sqrt(v) = 1
  for step, moved in enumerate(adapter_moved):
    rate = 5e-3 if step < 3 else float(adapter_qa(step - 3))
    assert moved == pytest.approx(-rate * (1 + 0.1 * adapter_before[step]), rel=1e-4, abs=1e-9), step
  for step in range(4):  # 3 reconstruction steps, then the LLM's 1 frozen step
    np.testing.assert_array_equal(llm_after[step], np.ones(2, np.float32))
  rates = optimizer.schedules(a, 10)
  for step in range(10):
    assert float(rates["llm"](step)) == pytest.approx(0.0 if step < 4 else float(llm_qa(step - 4)), abs=1e-12), step
  assert not np.array_equal(llm_after[6], np.ones(2, np.float32))
  with pytest.raises(ValueError, match="reconstruct_every=1"):
    AlignConfig(reconstruct_every=1)
  with pytest.raises(ValueError, match="user='text20'"):
    AlignConfig(mode="full", user="text20", reconstruct_steps=5)
  with pytest.raises(ValueError, match="contrast_weight=1 with user='text20'"):
    AlignConfig(mode="full", user="text20", contrast_weight=1.0)
  with pytest.raises(ValueError, match="reconstruct_fields=\\('title', 'colour'\\)"):
    AlignConfig(reconstruct_fields=("title", "colour"))


@pytest.mark.parametrize("phase", [{"reconstruct_steps": 3, "reconstruct_learning_rate": 5e-3, "learning_rate": 1e-2},
                                   {"llm_frozen_steps": 3, "learning_rate": 5e-3}])
def test_while_frozen_the_llm_neither_counts_in_the_clip_nor_fills_its_moments(phase):
  """Large LLM gradients in 3 frozen steps (reconstruction, or `llm_frozen_steps`): the adapter's
  updates equal an adapter-only optimizer's on the adapter's gradients alone (the clip sees no LLM
  gradient), and the LLM's Adam moments are still zero when its steps begin."""
  a = AlignConfig(mode="full", llm_learning_rate=1e-4, grad_clip=0.5, steps=4, **phase)
  alone = AlignConfig(mode="adapter", learning_rate=5e-3, grad_clip=0.5)
  rng = np.random.default_rng(2)
  params = {"adapter": {"w": np.ones(3, np.float32)}, "llm": {"a": np.ones(2, np.float32)}}
  tx, tx_alone = optimizer.make_optimizer(a, total_steps=7), optimizer.make_optimizer(alone, total_steps=7)
  state, state_alone = tx.init(params), tx_alone.init({"adapter": params["adapter"]})
  p, p_alone = params, {"adapter": params["adapter"]}
  for _ in range(3):
    grads = {"adapter": {"w": rng.normal(size=3).astype(np.float32)}, "llm": {"a": np.full(2, 1e3, np.float32)}}
    u, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, u)
    u, state_alone = tx_alone.update({"adapter": grads["adapter"]}, state_alone, p_alone)
    p_alone = optax.apply_updates(p_alone, u)
  np.testing.assert_allclose(p["adapter"]["w"], p_alone["adapter"]["w"], rtol=1e-6)
  np.testing.assert_array_equal(p["llm"]["a"], np.ones(2, np.float32))
  adam = next(s for s in state if isinstance(s, optimizer.GroupAdamState)).adam
  assert not np.asarray(adam["llm"].mu["a"]).any() and not np.asarray(adam["llm"].nu["a"]).any()
  assert int(adam["llm"].count) == 0 and int(adam["adapter"].count) == 3  # its own clock starts with its phase
  assert np.asarray(adam["adapter"].mu["w"]).any()
