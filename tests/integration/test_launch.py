"""The launchers print what they run: SLURM tasks get the coordinator, process count and index from
SLURM's variables and one GPU each; the TPU launcher creates, copies, installs and runs."""

import os
import subprocess

from tests.conftest import ROOT


def _run(script, env, *args):
  return subprocess.run(["bash", script, *args], cwd=ROOT, env=dict(os.environ, DRY_RUN="1", **env),
                        capture_output=True, text=True, timeout=60)


def test_slurm_task_runs_main_with_its_rank_and_gpu():
  env = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "11", "SLURM_LOCALID": "3",
         "CUDA_VISIBLE_DEVICES": "0,1,2,5,6", "COORDINATOR_HOST": "node001"}
  out = _run("launch/slurm.sh", env, "configs/scale.py:1b", "--config.mesh.fsdp=16")
  assert out.returncode == 0, out.stderr
  assert "(GPU 5)" in out.stdout  # the task's entry of SLURM's list, not its index
  assert ("-m uqa_jax.main --config configs/scale.py:1b --config.mesh.fsdp=16 --coordinator node001:29500 "
          "--num_processes 16 --process_id 11") in out.stdout
  outside = _run("launch/slurm.sh", {"SLURM_JOB_ID": ""}, "configs/smoke.py")
  assert outside.returncode != 0 and "inside a SLURM allocation" in outside.stderr


def test_tpu_pod_creates_copies_installs_and_runs_on_every_worker():
  env = {"TPU_NAME": "uqa", "ZONE": "us-central2-b", "ACCELERATOR": "v4-32", "WORKDIR": "/mnt/shared/w"}
  out = _run("launch/tpu_pod.sh", env, "configs/scale.py:1b", "--config.mesh.fsdp=16")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith("launch: gcloud")]
  assert "tpu-vm create uqa --zone us-central2-b --accelerator-type v4-32" in lines[0]
  assert "tpu-vm scp" in lines[1] and "--worker=all" in lines[1]
  assert "pip install -q 'jax[tpu]==" in lines[2]
  assert ("UQA_DISTRIBUTED=1 .venv/bin/python -m uqa_jax.main --config configs/scale.py:1b --workdir "
          "/mnt/shared/w --config.mesh.fsdp=16") in lines[3]
  missing = _run("launch/tpu_pod.sh", {"TPU_NAME": "uqa", "ZONE": "z", "WORKDIR": ""}, "configs/smoke.py")
  assert missing.returncode != 0 and "WORKDIR" in missing.stderr
