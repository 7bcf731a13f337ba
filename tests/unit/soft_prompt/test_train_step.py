"""Stage 2's guarded step with a trained LLM's frozen phases: while the LLM is held, the adapter
moves as optax's AdamW on the adapter's gradient alone would move it, the LLM stays bit for bit,
and the LLM's gradient is not computed at all (a loss whose LLM gradient is infinite still steps)."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from uqa_jax.config.recipes import AlignConfig
from uqa_jax.soft_prompt import optimizer
from uqa_jax.soft_prompt import program

X = np.asarray([0.5, -1.0, 2.0], np.float32)


def _loss(params, batch, *, model):
  """A tiny model: the adapter `w` and the LLM `v` coupled; sqrt(|v|) has an infinite gradient at 0."""
  del model
  w, v = params["adapter"]["w"], params["llm"]["v"]
  return jnp.sum((w * batch["x"] - 1.0) ** 2) + jnp.sum(v * w[:2]) + jnp.sum(jnp.sqrt(jnp.abs(v)))


def _run(a: AlignConfig, total_steps: int, params, steps: int):
  tx = optimizer.make_optimizer(a, total_steps)
  step = jax.jit(functools.partial(program.train_step, model=types.SimpleNamespace(num_soft=0), tx=tx,
                                   loss_fn=_loss, schedules=optimizer.schedules(a, total_steps),
                                   llm_frozen=optimizer.llm_frozen(a, total_steps)))
  state = program.AlignState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                             bad_in_row=jnp.int32(0), skipped=jnp.int32(0))
  out = []
  for _ in range(steps):
    state, metrics = step(state, {}, {"x": jnp.asarray(X)})
    out.append((jax.device_get(state.params), {k: float(v) for k, v in metrics.items()}))
  return out


def test_frozen_llm_phase_steps_the_adapter_alone_and_never_differentiates_the_llm():
  """`llm_frozen_steps=3` with the LLM at v = 0, where d sqrt(|v|) / dv is infinite: the first 3
  steps are not skipped (the LLM's gradient is never taken), the adapter follows optax's AdamW on
  its own gradient (clip included: the LLM's gradient does not count in it), and the LLM stays
  exactly 0; at step 4 the LLM's gradient is taken, infinite, and the step is skipped."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-3, grad_clip=0.5, weight_decay=0.1,
                  llm_frozen_steps=3, steps=6)
  params = {"adapter": {"w": jnp.asarray([1.0, 2.0, -1.0])}, "llm": {"v": jnp.zeros(2)}}
  out = _run(a, 6, params, 4)
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, b1=0.9, b2=0.98, weight_decay=0.1))
  w, state = params["adapter"]["w"], reference.init(params["adapter"]["w"])
  for i in range(3):
    grad = jax.grad(lambda w: _loss({"adapter": {"w": w}, "llm": {"v": jnp.zeros(2)}}, {"x": X}, model=None))(w)
    update, state = reference.update(grad, state, w)
    w = optax.apply_updates(w, update)
    got, metrics = out[i]
    assert metrics["skipped"] == 0.0 and np.isfinite(metrics["grad_norm"]), (i, metrics)
    np.testing.assert_allclose(got["adapter"]["w"], w, rtol=1e-6)
    np.testing.assert_array_equal(got["llm"]["v"], np.zeros(2, np.float32))
    assert np.isclose(metrics["grad_norm"], np.linalg.norm(grad), rtol=1e-6)  # the clip saw the adapter's alone
  assert out[3][1]["skipped"] == 1.0  # the LLM's phase: its infinite gradient is computed, the step kept back


def test_frozen_after_llm_steps_and_trained_before():
  """`llm_steps=2`: the LLM moves in steps 1-2 (its gradient taken: v away from 0 to keep it finite),
  then stays bit for bit while the adapter goes on; the predicate by hand over a run with every phase."""
  a = AlignConfig(mode="full", learning_rate=1e-2, llm_learning_rate=1e-2, llm_steps=2, steps=5)
  params = {"adapter": {"w": jnp.asarray([1.0, 2.0, -1.0])}, "llm": {"v": jnp.asarray([0.5, -0.5])}}
  out = _run(a, 5, params, 5)
  llm = [np.asarray(p["llm"]["v"]) for p, _ in out]
  assert not np.array_equal(llm[0], params["llm"]["v"]) and not np.array_equal(llm[1], llm[0])
  for later in llm[2:]:
    np.testing.assert_array_equal(later, llm[1])
  adapter = [np.asarray(p["adapter"]["w"]) for p, _ in out]
  assert all(not np.array_equal(x, y) for x, y in zip(adapter[2:], adapter[1:]))
  every = AlignConfig(mode="full", reconstruct_steps=2, llm_frozen_steps=1, llm_steps=3, steps=8)
  held = optimizer.llm_frozen(every, every.total_steps(rows=100))
  assert [bool(held(jnp.int32(i))) for i in range(10)] == [True] * 3 + [False] * 3 + [True] * 4
  assert optimizer.llm_frozen(AlignConfig(mode="full", steps=8), 8) is None  # trains in every step
  assert optimizer.llm_frozen(AlignConfig(mode="adapter", reconstruct_steps=2, steps=8), 10) is None  # never trains
