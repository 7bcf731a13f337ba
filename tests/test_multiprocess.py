"""`launch/local_multiprocess.sh 2` (two processes x 4 CPU devices, one 8-device mesh) pre-trains
the smoke config with the losses and parameters of one process with 8 devices; only process 0
builds the data set and writes the results."""

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _result(workdir):
  with open(os.path.join(workdir, "pretrain", "result.json"), encoding="utf-8") as f:
    return json.load(f)


def _params(workdir):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "pretrain", "export", "params"))


@pytest.mark.slow  # about 2 minutes on 2 cores: `make test-slow`
def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  multi, single, logs = tmp_path / "multi", tmp_path / "single", tmp_path / "logs"
  env = dict(os.environ, LOG_DIR=str(logs), PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "configs/smoke.py", "--workdir", str(multi)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "launch: process 1: XLA_FLAGS=--xla_force_host_platform_device_count=4" in out.stdout
  one = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(single)],
                       cwd=ROOT, env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                                          JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-3000:]

  process = [(logs / f"process_{i}.log").read_text() for i in range(2)]
  assert "uqa-jax: 2 processes (flags), 8 devices (4 per process)" in process[0]
  assert "mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in process[0] and "mesh {'data': 8" in one.stdout
  # process 0 built the data and printed; process 1 waited and printed nothing
  assert "[data] start" in process[0] and "OK: no problems found" in process[0]
  assert "[data] process 1 waits for process 0" in process[1]
  assert "[data] start" not in process[1] and "pretrain: step" not in process[1]

  got, want = _result(multi), _result(single)
  assert len(got["loss_curve"]) == len(want["loss_curve"]) == 12  # smoke: 12 steps, a line per step
  np.testing.assert_allclose(np.array(got["loss_curve"]), np.array(want["loss_curve"]), rtol=0, atol=1e-5)
  for k in ("recall@10", "ndcg@10"):
    assert abs(got["model"][k] - want["model"][k]) < 1e-6, k
  a, b = _params(multi), _params(single)
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(tree)
