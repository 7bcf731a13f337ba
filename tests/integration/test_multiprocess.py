"""`launch/local_multiprocess.sh 2` (two processes x 4 CPU devices, one 8-device mesh) pre-trains
the smoke config, and aligns it to a tiny LLM, with the losses and parameters of one process with
8 devices; only process 0 builds the data set and writes the results."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tests.conftest import ROOT


def _result(workdir, stage="pretrain"):
  with open(os.path.join(workdir, stage, "result.json"), encoding="utf-8") as f:
    return json.load(f)


def _params(workdir, stage="pretrain"):
  path = os.path.join(workdir, stage, "export", "params")
  if stage == "align":  # written shard by shard from the run's mesh
    from uqa_jax.soft_prompt import export as align_export  # pylint: disable=import-outside-toplevel
    return align_export.restore_params(path)
  return ocp.StandardCheckpointer().restore(path)


def _launch_both(tmp_path, overrides):
  """(process logs, the single process's stdout) of the smoke config with `overrides`, run by two
  processes x 4 devices into tmp_path/multi and by one process x 8 devices into tmp_path/single."""
  multi, single, logs = tmp_path / "multi", tmp_path / "single", tmp_path / "logs"
  env = dict(os.environ, LOG_DIR=str(logs), PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "configs/smoke.py", "--workdir", str(multi),
                        *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "launch: process 1: XLA_FLAGS=--xla_force_host_platform_device_count=4" in out.stdout
  one = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(single),
                        *overrides],
                       cwd=ROOT, env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                                          JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-3000:]
  return [(logs / f"process_{i}.log").read_text() for i in range(2)], one.stdout


@pytest.mark.slow  # about 1 minute per mesh on 2 cores: `make test-slow`
@pytest.mark.parametrize("mesh", ["data", "fsdp"])  # fsdp: parameters and optimizer state split across processes
def test_two_processes_match_one_process_with_eight_devices(tmp_path, mesh):
  multi, single = tmp_path / "multi", tmp_path / "single"
  axes = [f"--config.mesh.{a}={8 if a == mesh else 1}" for a in ("data", "fsdp", "tensor")]
  process, one_stdout = _launch_both(tmp_path, axes)
  assert "uqa-jax: 2 processes (flags), 8 devices (4 per process)" in process[0]
  shape = str({a: 8 if a == mesh else 1 for a in ("data", "fsdp", "tensor")})
  assert f"mesh {shape}" in process[0] and f"mesh {shape}" in one_stdout
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


@pytest.mark.slow  # Stage 1 then 6 align steps of a tiny LLM, twice: ~1.5 min per mode on 2 cores
@pytest.mark.parametrize("mode", ["full", "adapter"])
def test_two_processes_align_as_one_process_with_eight_devices(tmp_path, tokenizer, mode):
  """Stage 2 in two processes equals one: full fine-tuning on fsdp=8 (the LLM, the adapter and
  their AdamW state split across the processes), and adapter-only with the title-fit start on
  fsdp=2 x tensor=4 (each process one fsdp row of 4 tensor devices; the LLM frozen in bfloat16).
  The step losses, the eval answer NLL (each process evaluates its rows of every batch) and the
  exported parameters equal one process's."""
  from tests import tiny_llm  # pylint: disable=import-outside-toplevel
  llm = tiny_llm.make_dir(str(tmp_path / "llm"), tokenizer)
  overrides = [f"--config.llm.model={llm}", "--config.input.max_text_len=96", "--config.input.widths=()",
               "--config.pretrain.steps=3", "--config.stages=('data', 'pretrain', 'align')",
               f"--config.align.mode={mode}", "--config.align.schedule=constant", "--config.align.steps=6",
               "--config.align.batch_size=8", "--config.align.log_every=1", "--config.align.checkpoint_every=3"]
  if mode == "full":
    overrides += ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"]
  else:
    overrides += ["--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.tensor=4",
                  "--config.align.adapter_init=titles", "--config.llm.param_dtype=bfloat16",
                  "--config.encoder.num_heads=4",  # split 4 ways too
                  "--config.sharding_rules.kv_heads=()", "--config.sharding_rules.act_kv_heads=()"]  # the tiny LLM's 2
  process, _ = _launch_both(tmp_path, overrides)
  assert "[align] start" in process[0] and "align: step 6/6" in process[0], process[0][-3000:]
  assert "align: step" not in process[1]
  got, want = _result(tmp_path / "multi", "align"), _result(tmp_path / "single", "align")
  assert len(got["loss_curve"]) == len(want["loss_curve"]) == 6
  np.testing.assert_allclose(np.array(got["loss_curve"]), np.array(want["loss_curve"]), rtol=0, atol=1e-5)
  for key in ("eval_before", "eval"):
    assert abs(got[key]["answer_nll"] - want[key]["answer_nll"]) < 1e-5, key
  if mode == "adapter":  # the title fit ran on every process; all took process 0's
    assert "starts as the ridge fit" in process[0]
    fit, fit1 = got["title_fit"], want["title_fit"]  # Stage 1's parameters agree within 1e-5, not bit for bit
    assert {k: v for k, v in fit.items() if "r2" not in k} == {k: v for k, v in fit1.items() if "r2" not in k}
    assert all(abs(fit[k] - fit1[k]) < 1e-6 for k in fit if "r2" in k) and sorted(fit) == sorted(fit1)
  a, b = _params(tmp_path / "multi", "align"), _params(tmp_path / "single", "align")
  assert sorted(a) == sorted(b) == (["adapter", "llm"] if mode == "full" else ["adapter"])
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


@pytest.mark.slow  # a killed two-process run, its resumption and one process: ~1.5 min on 2 cores
def test_two_processes_resume_a_killed_run_and_end_as_one_uninterrupted_process(tmp_path):
  """Orbax restores collectively: killed after its step-8 checkpoint, the two-process fsdp=8 run
  resumes (each process its own data-iterator position) and exports what one process of 8
  devices exports without interruption."""
  axes = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"]
  multi = tmp_path / "multi"

  def launch(logs):
    return ["bash", "launch/local_multiprocess.sh", "2", "configs/smoke.py", "--workdir", str(multi), *axes], \
        dict(os.environ, LOG_DIR=str(tmp_path / logs), PYTHON=sys.executable)
  cmd, env = launch("killed")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True)
  for line in proc.stdout:  # process 0's log, streamed by the launcher
    if line.startswith("pretrain: step 11/12"):  # checkpoints at 4 and 8 were started (async)
      os.killpg(proc.pid, signal.SIGKILL)  # the launcher, both processes and the log tail
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(multi / "pretrain" / "export")
  cmd, env = launch("resumed")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  log = (tmp_path / "resumed" / "process_0.log").read_text()
  assert "pretrain: resumed from step 8" in log or "pretrain: resumed from step 4" in log, log[-3000:]
  single = tmp_path / "single"
  one = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(single),
                        *axes], cwd=ROOT, env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                                                  JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-3000:]
  for x, y in zip(jax_leaves(_params(multi)), jax_leaves(_params(single))):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(tree)


class _FakeSharding:
  """Two processes x 2 devices; this process's devices hold the rows `rows` of an 8-row batch."""

  def __init__(self, rows):
    self.rows = rows
    self.mesh = type("Mesh", (), {"shape": {"data": 2, "fsdp": 1, "tensor": 2}})()

  def addressable_devices_indices_map(self, shape):
    return {d: (slice(*r), slice(None)) for d, r in enumerate(self.rows)}


def test_a_mesh_that_feeds_another_process_rows_is_refused(monkeypatch):
  from uqa_jax.runtime import distributed  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  monkeypatch.setattr(distributed.jax, "process_index", lambda: 1)
  distributed.check_batch_block(_FakeSharding([(4, 6), (6, 8)]), (8, 3))  # its block 4-8: fine
  with pytest.raises(ValueError, match="process 1's devices hold batch rows 0-8 of 8, not its block 4-8"):
    distributed.check_batch_block(_FakeSharding([(0, 8), (0, 8)]), (8, 3))  # batch replicated over hosts
  with pytest.raises(ValueError, match="rows 0-4 of 8, not its block 4-8"):
    distributed.check_batch_block(_FakeSharding([(0, 2), (2, 4)]), (8, 3))


def test_process_flags_without_a_coordinator_are_an_error():
  from uqa_jax.runtime import distributed  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="need --coordinator"):
    distributed.initialize("", num_processes=2, process_id=1)


@pytest.mark.slow  # two processes start and stop: ~5 s (a subprocess pair; kept with the other launcher runs)
def test_a_one_process_stage_stops_a_multi_process_run_before_any_work(tmp_path):
  env = dict(os.environ, LOG_DIR=str(tmp_path / "logs"), PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "configs/smoke.py", "--workdir",
                        str(tmp_path / "w"), "--config.stages=('data', 'pretrain', 'evaluate')"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  log = (tmp_path / "logs" / "process_0.log").read_text()
  assert "[evaluate] runs in one process for now: drop --num_processes" in log, log[-2000:]
  assert not os.path.exists(tmp_path / "w" / "data")  # stopped before the data stage


def test_a_process_0_failure_in_a_stage_it_runs_alone_ends_every_process_with_its_error(tmp_path):
  """No launcher that kills the others (as on a pod slice): process 0 fails inside the data stage
  (the official files are missing), process 1, waiting for it, exits with process 0's error."""
  import socket
  import time
  empty = tmp_path / "official"
  empty.mkdir()
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir",
                             str(tmp_path / "w"), "--config.stages=('data',)", "--config.data.source=official",
                             f"--config.data.path={empty}", "--config.input.widths=()", "--coordinator", f"127.0.0.1:{port}",
                             "--num_processes", "2", "--process_id", str(i)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  start = time.time()
  outs = [p.communicate(timeout=240) for p in procs]
  assert time.time() - start < 120, "a process kept waiting"
  assert [p.returncode for p in procs] == [1, 1], outs
  missing = f"{empty}/pretrain_data_train.arrow: missing"
  assert missing in outs[0][1]
  last = outs[1][1].strip().splitlines()[-1]  # from its wait for process 0, or its watchdog, whichever reads first
  assert re.match(r"uqa-jax: (\[data\] )?process 0 failed: (DataFileError: )?(\[data\] )?", last), outs[1][1][-2000:]
  assert missing in last


def test_a_process_failing_inside_a_stage_every_process_runs_ends_the_others_with_its_error(tmp_path):
  """Process 1 fails at the start of Stage 1's loop (an injected error) while process 0 goes into
  its first step's collective: process 0's watchdog reads process 1's error and ends it."""
  import socket
  import time
  wrapper = tmp_path / "failing_main.py"
  wrapper.write_text(
      "import runpy, sys\n"
      "from uqa_jax.stages import train_loop\n"
      "def run(*args, **kwargs):\n"
      "  raise RuntimeError('injected: process 1 cannot train')\n"
      "train_loop.run = run\n"
      "sys.argv[0] = 'uqa_jax.main'\n"
      "runpy.run_module('uqa_jax.main', run_name='__main__', alter_sys=True)\n")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT)
  common = ["--config", "configs/smoke.py", "--workdir", str(tmp_path / "w"), "--config.input.widths=()",
            "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2"]
  procs = [subprocess.Popen([sys.executable, *(["-m", "uqa_jax.main"] if i == 0 else [str(wrapper)]), *common,
                             "--process_id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  start = time.time()
  outs = [p.communicate(timeout=300) for p in procs]
  assert time.time() - start < 150, "a process kept waiting"
  assert [p.returncode for p in procs] == [1, 1], outs
  assert "RuntimeError: injected: process 1 cannot train" in outs[1][1]
  assert "uqa-jax: process 1 failed: RuntimeError: injected: process 1 cannot train; process 0 stops too" \
      in outs[0][1], outs[0][1][-3000:]
