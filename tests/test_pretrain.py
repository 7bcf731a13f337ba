"""Stage 1 training: a SIGKILLed run resumes to the same parameters; NaN stops without saving."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(workdir), *extra]


def _exported(workdir):
  return ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(workdir, "pretrain", "export", "params")))


def test_relative_workdir_checkpoints_and_finishes(tmp_path):
  """`make demo` passes a relative --workdir; Orbax refuses relative checkpoint paths."""
  cmd = [sys.executable, "-m", "uqa_jax.main", "--config", os.path.join(ROOT, "configs", "smoke.py"),
         "--workdir", "relative/run", "--config.pretrain.steps=4", "--config.pretrain.checkpoint_every=2"]
  out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(tmp_path / "relative" / "run" / "pretrain" / "checkpoints" / "4")
  assert os.path.isdir(tmp_path / "relative" / "run" / "pretrain" / "export" / "params")


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
  straight = subprocess.run(_cmd(tmp_path / "a"), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert "pretrain: final recall@1" in straight.stdout

  proc = subprocess.Popen(_cmd(tmp_path / "b"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
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


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
  out = subprocess.run(_cmd(tmp_path, "--config.pretrain.learning_rate=1e30", "--config.pretrain.grad_clip=1e30"),
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode != 0
  assert "FloatingPointError: pretrain: loss is nan" in out.stderr or "loss is inf" in out.stderr, out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "pretrain" / "export")
