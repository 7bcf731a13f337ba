"""The fault matrix's SIGKILL rows for the data and evaluate stages: a run killed mid-stage, then
the same command, gives the same outputs as an uninterrupted run. (Stage 1: test_pretrain.py,
Stage 2: test_align.py; full disks and a damaged checkpoint: test_faults.py.)"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration import test_evaluate


def _main(config, workdir, *extra):
  return [sys.executable, "-m", "uqa_jax.main", "--config", config, "--workdir", str(workdir), *extra]


def _kill_at(cmd, starts_with: str, contains: str = ""):
  """Runs `cmd`, SIGKILLs it as soon as a stdout line starts with `starts_with` (and holds
  `contains`); -> the lines read."""
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(starts_with) and contains in line:
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=120)
  assert proc.returncode == -signal.SIGKILL, "".join(lines)[-3000:]
  return lines


def _files(root, skip=("result.json", "tensorboard")):
  """{relative path: bytes} of every file under `root`, but the run's own timings."""
  out = {}
  for base, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d not in skip]
    for f in files:
      if f not in skip:
        with open(os.path.join(base, f), "rb") as fh:
          out[os.path.relpath(os.path.join(base, f), root)] = fh.read()
  return out


def test_a_data_stage_killed_mid_stage_reruns_to_the_same_files(tmp_path):
  args = ("--config.stages=('data',)",)
  straight = subprocess.run(_main("configs/smoke.py", tmp_path / "a", *args), cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-3000:]
  _kill_at(_main("configs/smoke.py", tmp_path / "b", *args), "synthetic: users_in")  # generated, not yet written
  assert not os.path.exists(tmp_path / "b" / "data" / "result.json")
  again = subprocess.run(_main("configs/smoke.py", tmp_path / "b", *args), cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "[data] resuming" in again.stdout and "OK: no problems found" in again.stdout
  assert _files(tmp_path / "a" / "data") == _files(tmp_path / "b" / "data")


@pytest.mark.slow  # ~90 s: four runs of the main command on the chain LLM
def test_an_evaluate_stage_killed_while_generating_and_while_scoring_ends_with_the_same_outputs(tmp_path, tokenizer):
  llm_dir, _, _ = test_evaluate._chain_llm(tmp_path / "llm", tokenizer)
  config = tmp_path / "chain.py"  # the chain LLM's config, with a slow bootstrap so a kill lands while scoring
  config.write_text("from tests.integration import test_evaluate\n\n\ndef get_config():\n"
                    f"  c = test_evaluate.chain_config({llm_dir!r})\n"
                    "  c.stages = ('data', 'pretrain', 'align', 'evaluate')\n"
                    "  c.evaluate.bootstrap_samples = 20000\n  return c\n")
  straight = subprocess.run(_main(str(config), tmp_path / "a"), cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
  assert straight.returncode == 0, straight.stderr[-3000:]
  b = tmp_path / "b"
  for stage in ("data", "pretrain", "align"):
    shutil.copytree(tmp_path / "a" / stage, b / stage)
  # killed while generating shuffled_user's answers (aligned is finished): at its first progress line
  lines = _kill_at(_main(str(config), b, "--config.evaluate.log_every=1"), "evaluate[shuffled_user]", "/28 questions")
  assert any(line.startswith("evaluate[aligned]: official") for line in lines), "".join(lines)[-2000:]
  assert not os.path.exists(b / "evaluate" / "shuffled_user" / "result.json")
  # killed while scoring text20's predictions (written, not yet scored)
  lines = _kill_at(_main(str(config), b), "evaluate[text20]: 28 predictions written; scoring")
  assert "evaluate[aligned]: reusing" in "".join(lines)
  assert os.path.exists(b / "evaluate" / "text20" / "predictions.jsonl")
  assert not os.path.exists(b / "evaluate" / "text20" / "result.json")
  again = subprocess.run(_main(str(config), b), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "evaluate[shuffled_user]: reusing" in again.stdout and "[evaluate] resuming" in again.stdout
  assert _files(tmp_path / "a" / "evaluate", skip=("result.json", "tensorboard", "cost.json")) == \
      _files(b / "evaluate", skip=("result.json", "tensorboard", "cost.json"))
  runs = sorted(r for r in os.listdir(tmp_path / "a" / "evaluate") if (tmp_path / "a" / "evaluate" / r / "result.json").exists())
  assert {"aligned", "shuffled_user", "text20"} <= set(runs) and len(runs) >= 5, runs  # and the floors
  for run in runs:
    scores = [json.loads((w / "evaluate" / run / "result.json").read_text())["scores"] for w in (tmp_path / "a", b)]
    assert scores[0] == scores[1], run
