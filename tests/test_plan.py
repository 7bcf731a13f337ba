"""The memory planner: sizes parse, state bytes match the allocated state, the largest batch is
the largest that fits, and Stage 1 stops before allocating a step that cannot fit."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from uqa_jax import distributed
from uqa_jax import plan
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.stages import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sizes_and_meshes_parse_and_bad_ones_name_the_input():
  assert plan.parse_memory("80GiB") == 80 << 30 and plan.parse_memory("512MiB") == 512 << 20
  assert plan.parse_memory("16G") == 16 << 30 and plan.parse_memory("1.5e9") == 1_500_000_000
  assert plan.parse_mesh("data=2,fsdp=4") == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="'80 gigs'"):
    plan.parse_memory("80 gigs")
  with pytest.raises(ValueError, match="model=2"):
    plan.parse_mesh("model=2")
  with pytest.raises(ValueError, match="sizes >= 1"):
    plan.parse_mesh("data=-1")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("plan"))
  stages.run("data", smoke.get_config(), out, log=lambda *_: None)
  return out


@pytest.fixture(scope="module")
def parts(workdir):
  return pretrain.build(smoke.get_config(), workdir)


def test_state_bytes_equal_the_allocated_state(parts):
  p = plan.plan(parts, memory=1 << 40)
  state = parts.init(jax.random.PRNGKey(0))  # one device: the whole state
  assert p.state_bytes == sum(x.nbytes for x in jax.tree.leaves(state))
  assert p.parameters == sum(x.size for x in jax.tree.leaves(state.params))
  assert p.fits and p.step.peak >= p.state_bytes  # the step holds at least the state it updates


@pytest.mark.slow  # five compiles, ~25 s on 2 cores: `make test-slow`
def test_largest_batch_fits_and_ten_percent_more_does_not(parts):
  small = plan.step_memory(parts, parts.cfg.batch_size).peak
  memory = 12 * small  # room for a batch several times the config's
  p = plan.plan(parts, memory=memory, search=True)
  assert p.max_batch > parts.cfg.batch_size
  assert plan.step_memory(parts, p.max_batch).peak <= memory
  assert plan.step_memory(parts, int(p.max_batch * 1.1) + 1).peak > memory


def test_stage1_stops_before_allocating_a_step_that_cannot_fit(tmp_path):
  out = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir",
                        str(tmp_path), "--config.pretrain.device_memory=1MiB"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode != 0
  assert "[pretrain] the training step does not fit the devices; nothing was allocated" in out.stderr, out.stderr[-3000:]
  assert "device memory 1.0 MiB: the step does NOT fit" in out.stderr and "--config.mesh.fsdp=" in out.stderr
  assert not os.path.exists(tmp_path / "pretrain" / "checkpoints")


def test_the_planned_executable_runs_the_first_step_without_compiling_again(workdir):
  planned = pretrain.build(smoke.get_config(), workdir)
  plan.check(planned, log=lambda *_: None)
  path = os.path.join(workdir, "data", "pretrain_data_train.arrow")
  batch = next(distributed.GlobalBatches(iter(pipeline.make_dataset(path, planned.pipe)), planned.batch_shardings))
  _, metrics = planned.step(planned.init(jax.random.PRNGKey(0)), batch)
  assert planned.step._jit._cache_size() == 0  # pylint: disable=protected-access  # the plan's executable ran
  plain = pretrain.build(smoke.get_config(), workdir)  # never planned: jit compiles its step
  _, want = plain.step(plain.init(jax.random.PRNGKey(0)), batch)
  assert plain.step._jit._cache_size() == 1  # pylint: disable=protected-access
  assert float(metrics["loss"]) == float(want["loss"])


@pytest.mark.slow  # builds the paper-default synthetic data and compiles the 1.2B step: ~40 s
def test_scale_1b_on_this_machine_runs_or_stops_with_the_planner_figures(tmp_path):
  out = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/scale.py:1b", "--workdir",
                        str(tmp_path), "--config.pretrain.steps=1"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
  if out.returncode == 0:  # a machine with the memory for it ran a step
    assert "pretrain: step 1/1" in out.stdout or "pretrain: final" in out.stdout, out.stdout[-2000:]
    return
  assert "[pretrain] the training step does not fit the devices; nothing was allocated" in out.stderr, out.stderr[-3000:]
  assert "1,213,583,488 parameters" in out.stderr and "--config.mesh.fsdp=" in out.stderr
  assert not os.path.exists(tmp_path / "pretrain" / "checkpoints")
