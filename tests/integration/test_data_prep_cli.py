"""The data checker's command lines (`python -m data_prep.check`, `data_prep.uqabench`) as a user
runs them: exit codes, messages, a derived dataset_info.json."""

import subprocess
import sys

from tests.unit.data.test_checker import make_valid, rewrite, valid_dir  # noqa: F401 (valid_dir: a fixture)
from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import schema


def test_cli_exits_nonzero_and_prints_location(valid_dir):
  rewrite(valid_dir / "pretrain_data_train.arrow",
          lambda c: c[schema.ITEM_COLUMN][0].__setitem__(0, [99]))
  out = subprocess.run([sys.executable, "-m", "data_prep.check", str(valid_dir)],
                       capture_output=True, text=True)
  assert out.returncode == 1
  assert "pretrain_data_train.arrow, row 0, column 'uni_seq_item_id': id out of range" in out.stdout


def test_official_download_without_info_gets_one_derived(tmp_path):
  """data_prep.uqabench derives dataset_info.json for files in the official schema (no task column)."""
  src = tmp_path
  make_valid(str(src), language="zh", info=False)
  assert checker.check_directory(str(src)).notes  # official sizes assumed, and said so
  out = subprocess.run([sys.executable, "-m", "data_prep.uqabench", str(src)],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  info = arrow_io.read_dataset_info(str(src))
  assert info["vocab_sizes"] == schema.OFFICIAL_VOCAB_SIZES and info["language"] == "zh"
  assert info["counts"]["align_data_eval.arrow"] == 12
