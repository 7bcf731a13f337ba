"""Stage runs under the runner: reuse, stale outputs refused untouched, upstream checks, restart.
The checks before any work are tests/unit/stages/test_runner.py."""

import os

import pytest

from configs import smoke
from uqa_jax import stages

QUIET = lambda *_: None


def _tree_state(root):
  """{relative path: (size, mtime_ns)} of every file under `root`: what 'untouched' means."""
  out = {}
  for base, _, files in os.walk(root):
    for f in files:
      st = os.stat(os.path.join(base, f))
      out[os.path.relpath(os.path.join(base, f), root)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stages"))
  stages.run("data", smoke.get_config(), workdir, log=QUIET)
  return workdir


def test_a_batching_only_change_reuses_the_data(data_workdir):
  before = _tree_state(os.path.join(data_workdir, "data"))
  config = smoke.get_config()
  config.input.bag_sizes.uni_seq_cate_id = 1
  config.input.max_text_len = 64
  lines = []
  stages.run("data", config, data_workdir, log=lines.append)
  assert any("reusing" in line for line in lines)
  assert _tree_state(os.path.join(data_workdir, "data")) == before


def test_a_data_change_stops_before_touching_the_data(data_workdir):
  before = _tree_state(os.path.join(data_workdir, "data"))
  config = smoke.get_config()
  config.data.max_len = 32
  with pytest.raises(stages.StaleStateError, match=r"(?s)data.max_len: 64 -> 32\n.*--config.restart=data"):
    stages.run("data", config, data_workdir, log=QUIET)
  with pytest.raises(stages.StaleStateError, match=r"(?s)\[data\].*data.max_len: 64 -> 32"):
    stages.run("pretrain", config, data_workdir, log=QUIET)  # a downstream stage checks upstream too
  assert _tree_state(os.path.join(data_workdir, "data")) == before


def test_a_stage_needs_its_upstream_outputs(tmp_path):
  with pytest.raises(stages.StaleStateError, match=r"\[pretrain\] needs the finished outputs of the data stage"):
    stages.run("pretrain", smoke.get_config(), str(tmp_path), log=QUIET)


def test_outputs_without_a_fingerprint_are_refused(tmp_path):
  os.makedirs(tmp_path / "data" / "old")
  with pytest.raises(stages.StaleStateError, match="without a fingerprint.json"):
    stages.run("data", smoke.get_config(), str(tmp_path), log=QUIET)
  assert os.path.isdir(tmp_path / "data" / "old")


def test_restart_deletes_the_stage_and_everything_after_it(tmp_path):
  for name in ("data", "pretrain", "align"):
    os.makedirs(tmp_path / name)
  stages.restart(str(tmp_path), "pretrain", log=QUIET)
  assert sorted(os.listdir(tmp_path)) == ["data"]


def test_official_files_with_a_shorter_max_len_say_how_many_rows_are_longer(tmp_path):
  """The official files keep 512 clicks: a smaller data.max_len is reported at the data stage."""
  from configs import official
  from tests.unit.data.test_checker import make_valid
  from uqa_jax.data import arrow_io
  src = tmp_path / "kaggle"
  src.mkdir()
  make_valid(str(src), language="zh", info=False)
  config = official.get_config()
  config.data.path = str(src)
  config.data.max_len = 5
  lines = []
  info = stages.get("data").run(config, str(tmp_path / "run"), log=lines.append)
  for split in ("train", "eval"):
    name = f"align_data_{split}.arrow"
    f = arrow_io.SequenceFile(str(src / name))
    longer = sum(f.bags(r, "uni_seq_item_id").num_steps > 5 for r in range(len(f)))
    assert longer > 0
    assert any(l.startswith(f"data: WARNING {name}: {longer:,} of {len(f):,} rows have more than "
                            f"data.max_len=5") for l in lines), lines
  assert info["answers"]["eval"]["MF"]["n"] == 12  # floors for the official text too
  assert any(l.startswith("data: answers and floors on align eval") for l in lines)


def test_a_bumped_stage_version_makes_it_and_every_later_stage_stale_and_results_name_the_code(
    data_workdir, monkeypatch):
  import json
  from uqa_jax.runtime import provenance
  with open(os.path.join(data_workdir, "data", stages.RESULT), encoding="utf-8") as f:
    code = json.load(f)["code"]
  import importlib.metadata
  import subprocess
  assert code["package"] == importlib.metadata.version("uqa_jax")
  if os.path.exists(os.path.join(provenance.ROOT, ".git")):  # a clone (CI's too) names its commit, as git says
    head = subprocess.run(["git", "-C", provenance.ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert code["git_commit"] == head and isinstance(code["git_dirty"], bool)
  before = _tree_state(os.path.join(data_workdir, "data"))
  monkeypatch.setattr(stages.get("data"), "VERSION", 2, raising=False)
  config = smoke.get_config()
  assert stages.fingerprint("pretrain", config)["code_version.data"] == 2  # later stages carry it too
  with pytest.raises(stages.StaleStateError,
                     match=r"(?s)\[data\].*code_version.data: absent -> 2\n.*--config.restart=data"):
    stages.run("data", config, data_workdir, log=QUIET)
  with pytest.raises(stages.StaleStateError, match=r"(?s)\[data\].*code_version.data"):
    stages.run("pretrain", config, data_workdir, log=QUIET)
  assert _tree_state(os.path.join(data_workdir, "data")) == before
