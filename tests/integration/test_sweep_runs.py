"""python -m uqa_jax.tools.sweep as a user runs it: two sizes, then a resume that trains nothing."""

import subprocess
import sys

import pytest
from tests.conftest import ROOT


TINY = ["--config.data.synthetic.num_users=60", "--config.data.synthetic.num_items=300", "--config.data.max_len=32",
        "--config.pretrain.steps=2", "--config.pretrain.batch_size=8", "--config.pretrain.warmup_steps=1"]


@pytest.mark.slow  # about a minute on 2 cores: `make test-slow`
def test_sweep_runs_two_sizes_then_resumes_without_training_again(tmp_path):
  cmd = [sys.executable, "-m", "uqa_jax.tools.sweep", "--configs", "configs/scale.py:3m", "configs/scale.py:13m",
         "--root", str(tmp_path), "--", *TINY]
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
  lines = (tmp_path / "sweep-scale" / "sweep.md").read_text().splitlines()
  # the backbones of configs/scale.py (tests/unit/config/test_scale.py counts them from shapes)
  assert lines[2].startswith("| 3,164,416 | configs/scale.py:3m |") and lines[3].startswith("| 12,603,904 |")
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0 and again.stdout.count("[pretrain] reusing") == 2, again.stdout[-2000:]
