"""`python -m uqa_jax.main`: config loading, overrides, start-up validation, the data stage."""

import json
import os
import subprocess
import sys

import jax
import pytest
from tests.conftest import ROOT


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "uqa_jax.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def test_smoke_run_prepares_checks_and_reuses_data(tmp_path):
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.stages=('data',)")
  assert out.returncode == 0, out.stderr
  assert "OK: no problems found" in out.stdout
  assert os.path.exists(tmp_path / "data" / "align_data_eval.arrow")
  with open(tmp_path / "data" / "result.json", encoding="utf-8") as f:
    assert json.load(f)["counts"]["align_data_eval.arrow"] > 0
  again = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.stages=('data',)",
                   "--config.note=a note on this run's scale")
  assert again.returncode == 0 and "[data] reusing" in again.stdout
  assert "note" not in out.stdout and again.stdout.rstrip().endswith("uqa-jax: a note on this run's scale")


def test_the_demo_says_how_its_scale_differs_from_default_full():
  from configs import default, default_full
  note, full = default.get_config().note, default_full.get_config("trained-s0")
  assert "configs/default_full.py" in note and "make full" in note
  for fact in (f"{full.data.synthetic.num_users:,} users", f"{full.pretrain.steps:,} Stage 1",
               f"{full.align.steps} Stage 2", f"{full.align.reconstruct_steps} reconstruction",
               f"{default.get_config().align.steps} Stage 2",
               f"{default.get_config().data.synthetic.num_users} users"):
    assert fact in note, fact


def test_a_stage_whose_upstream_is_neither_listed_nor_done_stops_before_any_work(tmp_path):
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.stages=('data','evaluate')")
  assert out.returncode != 0
  assert "[evaluate] needs the finished outputs of the pretrain stage" in out.stderr, out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "data")


@pytest.mark.slow  # ~20 s: `make test-slow`; MovieLens loading has its own fast tests
def test_stage1_runs_on_movielens_with_hstu_time_bias(tmp_path):
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.data.source=movielens",
                 "--config.encoder.name=hstu", "--config.pretrain.steps=4")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ratings 100,000, users 943" in out.stdout and "OK: no problems found" in out.stdout
  assert "pretrain: HSTU time bias on (the data carries click times)" in out.stdout
  assert "pretrain: final recall@1" in out.stdout and "popularity baseline recall@1" in out.stdout
  with open(tmp_path / "pretrain" / "export" / "encoder.json", encoding="utf-8") as f:
    exported = json.load(f)
  assert exported["encoder"]["name"] == "hstu" and exported["has_time"]
  from uqa_jax.encoders import export  # Stage 2's loader reads what Stage 1 wrote, every tensor checked
  model, params, _ = export.load(str(tmp_path / "pretrain" / "export"))
  assert model.cfg.name == "hstu" and model.cfg.max_len == 64 and "time_rab" in str(jax.tree_util.tree_structure(params))
  with open(tmp_path / "data" / "dataset_info.json", encoding="utf-8") as f:
    info = json.load(f)
  assert info["source"] == "movielens" and info["has_timestamps"]
  assert exported["vocab_sizes"] == info["vocab_sizes"] and info["vocab_sizes"]["item"] > 1_000


@pytest.mark.parametrize("override,key", [
    ("--config.encoder.name=bert4rec", "encoder.name"),
    ("--config.data.source=criteo", "data.source"),
    ("--config.stages=('data','finetune')", "stages"),
])
def test_unknown_names_fail_at_start_up_listing_the_choices(tmp_path, override, key):
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), override)
  assert out.returncode != 0
  assert f"config {key}=" in out.stderr and "expected one of" in out.stderr
  assert not os.path.exists(tmp_path / "data")  # failed before doing any work


@pytest.mark.parametrize("override,message", [
    ("--config.pretrain.steps=-5", "config pretrain.steps=-5: expected >= 0"),
    ("--config.pretrain.batch_size=-8", "config pretrain.batch_size=-8: expected >= 1"),
    ("--config.align.betas=(0.9,1.5)", "config align.betas=(0.9, 1.5): expected in [0, 1) for each element"),
    ("--config.data.max_len=0", "config data.max_len=0: expected >= 2"),
    ("--config.evaluate.top_p=0.0", "config evaluate.top_p=0.0: expected in (0, 1]"),
    ("--config.data.filters.min_user_len=5000", "min_user_len=5000 > max_user_len=2000"),
    ("--config.mesh.data=0", "mesh {'data': 0, 'fsdp': 1, 'tensor': 1}: each axis is a whole number >= 1"),
    ("--config.encoder.num_heads=3", "config encoder: d_model=32 is not divisible by num_heads=3"),
])
def test_impossible_numbers_are_one_line_before_any_work_even_for_an_unlisted_stage(tmp_path, override, message):
  # only the data stage is listed: the pretrain and align blocks are still checked
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), override, "--config.stages=('data',)")
  assert out.returncode == 1 and out.stderr.strip().splitlines() == [f"uqa-jax: {out.stderr.strip()[9:]}"]
  assert message in out.stderr and "Traceback" not in out.stderr and "libtpu" not in out.stderr
  assert not os.listdir(tmp_path)  # no fingerprint, no data: nothing to restart


def test_a_mistyped_key_names_the_block_and_its_keys_and_debug_shows_the_traceback(tmp_path):
  out = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.pretrain.lr=1")
  assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert "--config.pretrain.lr=1: config.pretrain has no key 'lr'; its keys: batch_size," in out.stderr
  assert "learning_rate" in out.stderr and "Traceback" not in out.stderr
  block = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.prtrain.steps=3")
  assert "config has no key 'prtrain'; its keys: adapter, align, data," in block.stderr
  debug = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.pretrain.steps=-5",
                   "--config.stages=('data',)", "--debug")
  assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError: config pretrain.steps=-5" in debug.stderr


def test_a_config_file_without_a_block_or_that_does_not_load_is_one_line(tmp_path):
  no_data = tmp_path / "no_data.py"
  no_data.write_text("from configs import smoke\n\ndef get_config():\n  c = smoke.get_config()\n"
                     "  del c['data']\n  return c\n")
  out = run_main("--config", str(no_data), "--workdir", str(tmp_path / "w"))
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "config: no 'data' block, which the data stage reads (stages data, pretrain)" in out.stderr
  missing = run_main("--config", str(tmp_path / "absent.py"), "--workdir", str(tmp_path / "w"))
  assert missing.returncode == 1 and "Traceback" not in missing.stderr and "absent.py" in missing.stderr
  broken = tmp_path / "broken.py"  # a defect in the file's own code keeps its traceback, pointing at the line
  broken.write_text("def get_config(:\n")
  out = run_main("--config", str(broken), "--workdir", str(tmp_path / "w"))
  assert out.returncode == 1 and "SyntaxError" in out.stderr and f'File "{broken}", line 1' in out.stderr
  assert not os.path.exists(tmp_path / "w")
