"""The memory planner: sizes parse, state bytes match the allocated state, the largest batch is
the largest that fits, Stage 1 stops before allocating a step that cannot fit, and Stage 2 before
it reads the LLM's weights; the planned executables run the first steps."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.llm import sharded_load
from uqa_jax.runtime import distributed
from uqa_jax.runtime import planner
from uqa_jax.soft_prompt import program as program_lib
from uqa_jax.stages import align
from uqa_jax.stages import pretrain
from tests.conftest import ROOT


def test_sizes_and_meshes_parse_and_bad_ones_name_the_input():
  assert planner.parse_memory("80GiB") == 80 << 30 and planner.parse_memory("512MiB") == 512 << 20
  assert planner.parse_memory("16G") == 16 << 30 and planner.parse_memory("1.5e9") == 1_500_000_000
  assert planner.parse_memory("") is None  # the device's own memory
  assert planner.parse_mesh("data=2,fsdp=4") == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="'80 gigs'"):
    planner.parse_memory("80 gigs")
  with pytest.raises(ValueError, match="model=2"):
    planner.parse_mesh("model=2")
  with pytest.raises(ValueError, match="sizes >= 1"):
    planner.parse_mesh("data=-1")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("plan"))
  stages.run("data", smoke.get_config(), out, log=lambda *_: None)
  return out


@pytest.fixture(scope="module")
def parts(workdir):
  return pretrain.build(smoke.get_config(), workdir)


def test_state_bytes_equal_the_allocated_state(parts):
  p = planner.plan(parts.target(), memory=1 << 40)
  state = parts.init(jax.random.PRNGKey(0))  # one device: the whole state
  assert p.state_bytes == sum(x.nbytes for x in jax.tree.leaves(state))
  assert p.parameters == sum(x.size for x in jax.tree.leaves(state.params))
  assert p.fits and p.step.peak >= p.state_bytes  # the step holds at least the state it updates


@pytest.mark.slow  # five compiles, ~25 s on 2 cores: `make test-slow`
def test_largest_batch_fits_and_ten_percent_more_does_not(parts):
  small = planner.step_memory(parts.target(), parts.cfg.batch_size).peak
  memory = 12 * small  # room for a batch several times the config's
  p = planner.plan(parts.target(), memory=memory, search=True)
  assert p.max_batch > parts.cfg.batch_size
  assert planner.step_memory(parts.target(), p.max_batch).peak <= memory
  assert planner.step_memory(parts.target(), int(p.max_batch * 1.1) + 1).peak > memory


def test_stage1_stops_before_allocating_a_step_that_cannot_fit(tmp_path):
  out = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir",
                        str(tmp_path), "--config.pretrain.device_memory=1MiB"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode != 0
  assert "[pretrain] the pretrain training step does not fit the devices; nothing was allocated" in out.stderr, out.stderr[-3000:]
  assert "device memory 1.0 MiB: the step does NOT fit" in out.stderr and "--config.mesh.fsdp=" in out.stderr
  assert not os.path.exists(tmp_path / "pretrain" / "checkpoints")


def test_the_planned_executable_runs_the_first_step_without_compiling_again(workdir):
  planned = pretrain.build(smoke.get_config(), workdir)
  planner.check(planned.target(), log=lambda *_: None)
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
  assert "[pretrain] the pretrain training step does not fit the devices; nothing was allocated" in out.stderr, out.stderr[-3000:]
  assert "1,213,583,488 parameters" in out.stderr and "--config.mesh.fsdp=" in out.stderr
  assert not os.path.exists(tmp_path / "pretrain" / "checkpoints")


# --- Stage 2 (align) -----------------------------------------------------------------

def _align_workdir(tiny_llm_base, path, **llm_fields):
  """(config, a workdir holding the tiny LLM base's data and Stage 1): align 2 adapter-only steps of batch 4."""
  from tests.conftest import tiny_llm_config  # pylint: disable=import-outside-toplevel
  llm_dir, base = tiny_llm_base
  for stage in ("data", "pretrain"):
    shutil.copytree(os.path.join(base, stage), path / stage)
  config = tiny_llm_config(llm_dir)
  config.stages = ("data", "pretrain", "align")
  a = config.align
  a.batch_size, a.steps, a.schedule, a.mode = 4, 2, "constant", "adapter"
  for key, value in llm_fields.items():
    setattr(config.llm, key, value)
  return config, str(path)


def _align_target(prog, workdir):
  return program_lib.plan_target(prog, prog.pipe, os.path.join(workdir, "data"), prog.tokenizer)


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_align_state_bytes_equal_the_allocated_state_and_frozen_groups(tiny_llm_base, tmp_path, param_dtype):
  config, workdir = _align_workdir(tiny_llm_base, tmp_path, param_dtype=param_dtype)
  parts = align.build(config, workdir)
  p = planner.plan(_align_target(parts, workdir), memory=1 << 40)
  state = parts.init(None)  # one device: everything whole
  held = (state, parts.frozen)
  assert p.name == "align" and p.fits
  assert p.state_bytes == sum(x.nbytes for x in jax.tree.leaves(held))
  assert p.parameters == sum(x.size for x in jax.tree.leaves((state.params, parts.frozen)))
  llm = parts.frozen["llm"]
  assert {x.dtype for x in jax.tree.leaves(llm)} == {np.dtype(jax.numpy.dtype(param_dtype))}
  assert p.step.peak >= p.state_bytes


def test_align_stops_before_reading_the_llm_weights_when_the_step_cannot_fit(tiny_llm_base, tmp_path, monkeypatch):
  config, workdir = _align_workdir(tiny_llm_base, tmp_path)
  config.align.device_memory = "1MiB"

  def read(*args, **kwargs):
    raise AssertionError("the LLM's weights were read before the plan")
  monkeypatch.setattr(sharded_load, "load_onto", read)
  with pytest.raises(planner.DoesNotFit, match="the align training step does not fit the devices") as e:
    align.build(config, workdir, log=lambda *_: None)
  assert "--config.llm.param_dtype=bfloat16" in str(e.value) and "device memory 1.0 MiB" in str(e.value)


def test_the_planned_align_executable_runs_the_first_step_without_compiling_again(tiny_llm_base, tmp_path):
  config, workdir = _align_workdir(tiny_llm_base, tmp_path)
  config.input.widths = ()  # batches at the full text length, the shape the plan compiles
  lines = []
  parts = align.build(config, workdir, log=lines.append)
  assert any(line.startswith("plan: align step needs") for line in lines), lines
  path = os.path.join(workdir, "data", "align_data_train.arrow")
  data = pipeline.make_dataset(path, parts.pipe, tokenizer=parts.tokenizer)
  batch = next(distributed.GlobalBatches(iter(data), parts.batch_sharding))
  _, metrics = parts.step(parts.init(None), batch)
  assert np.isfinite(float(metrics["loss"]))
  assert parts.sharded_step._jit._cache_size() == 0  # pylint: disable=protected-access  # the plan's executable ran


@pytest.mark.slow  # ~12 s: a subprocess that compiles the step (align's plan is tested fast in-process above)
def test_plan_cli_plans_the_align_step_from_the_stage1_export(tiny_llm_base, tmp_path):
  config, workdir = _align_workdir(tiny_llm_base, tmp_path)
  out = subprocess.run([sys.executable, "-m", "uqa_jax.tools.plan", "--config", "configs/smoke.py", "--workdir", workdir,
                        "--stage", "align", "--nosearch", f"--config.llm.model={config.llm.model}",
                        f"--config.input.max_text_len={config.input.max_text_len}", "--config.align.batch_size=4",
                        "--config.align.steps=2", "--config.align.schedule=constant", "--config.align.mode=adapter"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  parts = align.build(config, workdir)
  count = sum(x.size for x in jax.tree.leaves((parts.init(None).params, parts.frozen)))
  assert f"plan: encoder from {workdir}/pretrain/export" in out.stdout, out.stdout
  assert f"align step, mesh {{'data': 1, 'fsdp': 1, 'tensor': 1}} (cpu), {count:,} parameters" in out.stdout
  bad = subprocess.run([sys.executable, "-m", "uqa_jax.tools.plan", "--config", "configs/smoke.py", "--workdir", workdir,
                        "--stage", "align", "--llm", "qwen9"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "--llm 'qwen9': unknown; expected one of qwen2.5-0.5b" in bad.stderr


@pytest.mark.slow  # builds the paper-size synthetic data and compiles a 3B step on 8 simulated devices: ~2 min
def test_plan_cli_plans_qwen_3b_alignment_over_fsdp_and_tensor_without_its_weights(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-m", "uqa_jax.tools.plan", "--config", "configs/qwen.py:3b", "--workdir",
                        str(tmp_path / "w"), "--stage", "align", "--llm", "qwen2.5-3b", "--nosearch",
                        "--config.data.source=synthetic"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "is not on this machine: its text is cut with the smollm2 tokenizer" in out.stdout
  assert "align step, mesh {'data': 1, 'fsdp': 2, 'tensor': 4} (cpu)" in out.stdout, out.stdout[-2000:]
  assert "LLM 36 layers x 2048, stored bfloat16, computing bfloat16, remat; align mode adapter" in out.stdout
