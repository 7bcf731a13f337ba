"""Stage 1 training: the pure step, resume after SIGKILL, non-finite steps never saved, stale runs refused."""

import json
import functools
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import smoke
from uqa_jax import encoders
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.stages import pretrain
from tests.conftest import ROOT


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(workdir), *extra]


def _exported(workdir):
  return ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(workdir, "pretrain", "export", "params")))


@pytest.mark.slow  # ~20 s: `make test-slow`
def test_relative_workdir_checkpoints_and_finishes(tmp_path):
  """`make demo` passes a relative --workdir; Orbax refuses relative checkpoint paths."""
  cmd = [sys.executable, "-m", "uqa_jax.main", "--config", os.path.join(ROOT, "configs", "smoke.py"),
         "--workdir", "relative/run", "--config.pretrain.steps=4", "--config.pretrain.checkpoint_every=2",
         "--config.pretrain.keep_checkpoints=last"]  # kept after the stage ends, to be looked at
  out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.listdir(tmp_path / "relative" / "run" / "pretrain" / "checkpoints") == ["4"]  # 2 pruned at the end
  assert "checkpoints: the stage is done: kept step 4, freed" in out.stdout
  assert os.path.isdir(tmp_path / "relative" / "run" / "pretrain" / "export" / "params")


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
  straight = subprocess.run(_cmd(tmp_path / "a"), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert "pretrain: final recall@1" in straight.stdout
  with open(tmp_path / "a" / "pretrain" / "result.json", encoding="utf-8") as f:
    compiled = json.load(f)["compile"]  # the runner's accounting, from JAX's compilation events
  assert compiled["executables"] == 3, compiled  # init, step, eval: nothing runs eagerly (runtime/keys.py)
  assert 0 < compiled["compile_seconds"] < compiled["seconds"], compiled
  assert f"[pretrain] compiled {compiled['executables']} XLA executables" in straight.stdout

  # Without PYTHONUNBUFFERED: progress must arrive line by line anyway (main line-buffers stdout).
  env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
  proc = subprocess.Popen(_cmd(tmp_path / "b"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=env)
  for line in proc.stdout:
    if line.startswith("pretrain: step 11/12"):  # checkpoints at 4 and 8 were started (async)
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(tmp_path / "b" / "pretrain" / "export")

  resumed = subprocess.run(_cmd(tmp_path / "b"), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "pretrain: resumed from step 8" in resumed.stdout or "pretrain: resumed from step 4" in resumed.stdout
  a, b = _exported(tmp_path / "a"), _exported(tmp_path / "b")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # ~18 s: a Stage 1 run to its poisoned step (align's guard is tested fast in test_align)
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
  out = subprocess.run(_cmd(tmp_path, "--config.pretrain.learning_rate=1e30", "--config.pretrain.grad_clip=1e30"),
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode != 0
  # lr 0 at step 1 (warm-up); step 2's loss and gradient are finite but its update blows the
  # parameters up (their norm overflows): step 2 is the first bad one, not step 3 where the loss goes
  assert re.search(r"FloatingPointError: pretrain: non-finite param_norm inf at step 2; stopped without saving. "
                   r"No checkpoint was saved yet", out.stderr), out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "pretrain" / "export")


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  stages.run("data", smoke.get_config(), workdir, log=lambda *_: None)
  return workdir


@pytest.mark.slow  # 28 s; the loss inside it is tested against the full softmax in test_nip_loss
def test_train_step_is_a_pure_function_a_test_can_call(data_workdir):
  """Two calls of the plain train_step function == loss_fn, a NumPy gradient norm and optax by
  hand; the stage's sharded, donating step == both. (Step 1 has learning rate 0 in warm-up:
  step 2 moves.) Both sides are wrapped in a bare `jax.jit`: op-by-op they took a minute."""
  config = smoke.get_config()
  parts = pretrain.build(config, data_workdir)
  data = iter(pipeline.make_dataset(os.path.join(data_workdir, "data", "pretrain_data_train.arrow"), parts.pipe))
  batches = [jax.tree.map(jnp.asarray, next(data)) for _ in range(2)]
  tx = pretrain.make_optimizer(parts.cfg, parts.total_steps)
  state = parts.init(jax.random.PRNGKey(0))
  params, opt_state = state.params, tx.init(state.params)
  step = jax.jit(functools.partial(pretrain.train_step, model=parts.model, tx=tx, cfg=parts.cfg))
  reference = jax.jit(jax.value_and_grad(lambda p, batch, i: pretrain.loss_fn(
      parts.model, parts.cfg, p, batch, jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), i))))
  for i, batch in enumerate(batches):
    state, m = step(state, batch)
    loss, grads = reference(params, batch, i)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
    flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)]).astype(np.float64)
    np.testing.assert_allclose(m["grad_norm"], np.sqrt(np.sum(flat ** 2)), rtol=1e-5)
    flat = np.concatenate([np.ravel(p) for p in jax.tree.leaves(params)]).astype(np.float64)
    np.testing.assert_allclose(m["param_norm"], np.sqrt(np.sum(flat ** 2)), rtol=1e-5)
  assert int(state.step) == 2
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                  jax.tree.leaves(parts.init(jax.random.PRNGKey(0)).params))]
  assert all(moved), "step 2 must change every parameter"
  for a, b in zip(jax.tree.leaves((state.params, state.opt_state)), jax.tree.leaves((params, opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

  jitted = parts.init(jax.random.PRNGKey(0))
  for batch in batches:
    jitted, jitted_m = parts.step(jitted, batch)
  np.testing.assert_allclose(jitted_m["loss"], m["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves((jitted.params, jitted.opt_state)), jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_non_finite_gradient_after_a_checkpoint_is_never_saved(data_workdir, tmp_path, monkeypatch):
  """Step 6's gradient is NaN while its loss is finite: checkpoint 4 stays the newest, the error names step 6."""
  workdir = str(tmp_path)
  os.symlink(os.path.join(data_workdir, "data"), os.path.join(workdir, "data"))
  config = smoke.get_config()
  config.pretrain.log_every = 100  # metrics are fetched at checkpoints (4, 8, 12) only
  poisoned_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), 5)  # the step from 5 to 6
  real_loss_fn = pretrain.loss_fn

  def poisoned_loss_fn(model, cfg, params, batch, rng):
    bad = jnp.all(rng == poisoned_rng)
    leaf = jax.tree.leaves(params)[0]
    # value 0 always; gradient 0 * inf * 0 = NaN on the poisoned step only
    s = jnp.where(bad, 0.0 * jnp.sum(leaf), 1.0 + 0.0 * jnp.sum(leaf))
    return real_loss_fn(model, cfg, params, batch, rng) + 0.0 * jnp.sqrt(s)

  monkeypatch.setattr(pretrain, "loss_fn", poisoned_loss_fn)
  with pytest.raises(FloatingPointError, match=r"pretrain: non-finite grad_norm nan, param_norm nan at step 6; stopped without "
                                               r"saving. The newest checkpoint is step 4"):
    stages.run("pretrain", config, workdir, log=lambda *_: None)
  assert sorted(os.listdir(os.path.join(workdir, "pretrain", "checkpoints"))) == ["4"]
  assert not os.path.exists(os.path.join(workdir, "pretrain", "export"))
  assert not os.path.exists(os.path.join(workdir, "pretrain", "result.json"))


@pytest.mark.slow  # ~28 s: two Stage 1 runs (stale-setting detection is tested fast in test_stages)
def test_a_changed_learning_rate_stops_the_run_and_restart_retrains(tmp_path):
  args = ("--config.pretrain.steps=4",)
  first = subprocess.run(_cmd(tmp_path, *args), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  checkpoints = tmp_path / "pretrain" / "checkpoints"
  before = sorted((p, os.stat(os.path.join(d, p)).st_mtime_ns) for d, _, files in os.walk(checkpoints) for p in files)

  changed = subprocess.run(_cmd(tmp_path, *args, "--config.pretrain.learning_rate=0.002"), cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
  assert changed.returncode != 0
  assert "pretrain.learning_rate: 0.001 -> 0.002" in changed.stderr, changed.stderr[-3000:]
  assert "--config.restart=pretrain" in changed.stderr
  after = sorted((p, os.stat(os.path.join(d, p)).st_mtime_ns) for d, _, files in os.walk(checkpoints) for p in files)
  assert after == before  # nothing touched

  restarted = subprocess.run(_cmd(tmp_path, *args, "--config.pretrain.learning_rate=0.002",
                                  "--config.restart=pretrain"), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert restarted.returncode == 0, restarted.stderr[-3000:]
  assert "restart=pretrain: deleting" in restarted.stdout and "[data] reusing" in restarted.stdout
  assert "pretrain: step 4/4" in restarted.stdout  # trained again from step 0
  with open(tmp_path / "pretrain" / "fingerprint.json", encoding="utf-8") as f:
    assert json.load(f)["pretrain.learning_rate"] == 0.002


@pytest.mark.parametrize("encoder", encoders.NAMES)
def test_bfloat16_compute_tracks_float32_with_float32_weights_and_moments(data_workdir, encoder):
  """Mixed precision as accelerators run it (`encoder.dtype=bfloat16`, parameters float32): the
  same batches from the same start give losses within 3% of float32 over 4 steps (the warm-up
  moves the weights from step 2), and the parameters and Adam moments stay float32."""
  data = iter(pipeline.make_dataset(os.path.join(data_workdir, "data", "pretrain_data_train.arrow"),
                                    pretrain.build(smoke.get_config(), data_workdir).pipe))
  batches = [next(data) for _ in range(4)]
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = smoke.get_config(encoder)
    config.encoder.dtype = dtype
    parts = pretrain.build(config, data_workdir)
    state = parts.init(jax.random.PRNGKey(0))
    losses[dtype] = []
    for batch in batches:
      state, m = parts.step(state, batch)
      assert m["loss"].dtype == jnp.float32
      losses[dtype].append(float(m["loss"]))
    floats = [x for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}, encoder
  assert losses["bfloat16"] != losses["float32"]  # bfloat16 really computed
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=3e-2)
