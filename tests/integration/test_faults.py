"""The fault matrix, Stage 1 in process: a full disk at a checkpoint, at the export and at
result.json, and an unreadable newest checkpoint; after each, the same call resumes and ends
bit-identical to an uninterrupted run. (SIGKILL rows: tests/integration/test_pretrain.py,
test_align.py, test_kills.py; the list: docs/reliability.md.)"""

import errno
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import smoke
from uqa_jax import stages
from uqa_jax.encoders import export
from uqa_jax.runtime import disk
from uqa_jax.runtime import errors

FULL = "RESOURCE_EXHAUSTED: Error writing local file: No space left on device"  # what TensorStore raises


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("faults-data"))
  stages.run("data", _config(), workdir, log=lambda *_: None)
  return os.path.join(workdir, "data")


def _config():
  config = smoke.get_config()  # 12 steps, checkpoints at 4, 8, 12 (2 kept while running)
  config.pretrain.keep_checkpoints = "last"  # what the last call below checks: the others go
  return config


def _workdir(tmp_path, data_dir, name):
  workdir = tmp_path / name
  shutil.copytree(data_dir, workdir / "data")
  return str(workdir)


def _params(workdir):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "pretrain", "export", "params"))


def test_full_disks_and_an_unreadable_checkpoint_stop_cleanly_and_resume_bit_identical(
    tmp_path, data_dir, monkeypatch):
  straight = _workdir(tmp_path, data_dir, "straight")
  stages.run("pretrain", _config(), straight, log=lambda *_: None)
  workdir, lines = _workdir(tmp_path, data_dir, "faulty"), []
  ckpts = os.path.join(workdir, "pretrain", "checkpoints")

  # 1. The disk fills while checkpoint 12 is written: Orbax's partial directory goes, 4 and 8 stay.
  real_save = ocp.CheckpointManager.save
  def save(self, step, *args, **kwargs):
    if step == 12:
      os.makedirs(os.path.join(ckpts, "12.orbax-checkpoint-tmp-1"))
      raise ValueError(FULL)
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(errors.DiskFull) as e:
    stages.run("pretrain", _config(), workdir, log=lines.append)
  assert str(e.value).startswith(f"checkpoint {ckpts}/12: the disk filled while writing it")
  assert f"the newest good checkpoint is {ckpts}/8: free space and rerun the same command" in str(e.value)
  assert sorted(os.listdir(ckpts)) == ["4", "8"] and not os.path.exists(os.path.join(workdir, "pretrain", "export"))
  monkeypatch.undo()

  # 2. Checkpoint 8 is damaged (its files cut in half): named, moved aside, resumed from 4.
  for base, _, files in os.walk(os.path.join(ckpts, "8")):
    for f in files:
      path = os.path.join(base, f)
      with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
  # 3. ... and this time the export does not fit: refused before a byte is written.
  monkeypatch.setattr(disk, "free_bytes", lambda p: 0 if p.endswith("export") else 1 << 40)
  lines.clear()
  with pytest.raises(errors.DiskFull, match=r"encoder export .*/pretrain/export needs about .* nothing was written"):
    stages.run("pretrain", _config(), workdir, log=lines.append)
  said = "\n".join(lines)
  assert f"checkpoint {ckpts}/8 cannot be read back" in said, said
  assert re.search(rf"moved to {re.escape(ckpts)}-unreadable/8-\d{{8}}-\d{{6}}; resuming from the previous one, step 4",
                   said), said
  assert "pretrain: resumed from step 4" in said
  assert sorted(os.listdir(ckpts)) == ["12", "8"] and not os.path.exists(os.path.join(workdir, "pretrain", "export"))
  monkeypatch.undo()

  # 3b. ... and the disk fills while the export is written: its partial directory goes.
  real_std_save = ocp.StandardCheckpointer.save
  def export_save(self, path, *args, **kwargs):
    if "export" in str(path):
      os.makedirs(os.path.join(str(path), "partial"), exist_ok=True)
      raise ValueError(FULL)
    return real_std_save(self, path, *args, **kwargs)
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", export_save)
  with pytest.raises(errors.DiskFull, match=r"encoder export .*/pretrain/export: the disk filled while writing it"):
    stages.run("pretrain", _config(), workdir, log=lambda *_: None)
  assert not os.path.exists(os.path.join(workdir, "pretrain", "export"))
  monkeypatch.undo()

  # 4. result.json does not fit: the stage stays unfinished, its checkpoints kept; then the disk
  # fills while it is written: no result.json, no temporary file.
  monkeypatch.setattr(disk, "free_bytes", lambda p: 0 if p.endswith("result.json") else 1 << 40)
  with pytest.raises(errors.DiskFull, match=r"file .*/pretrain/result.json needs about"):
    stages.run("pretrain", _config(), workdir, log=lambda *_: None)
  assert stages.status(workdir, "pretrain", _config()) == "started"
  monkeypatch.undo()
  real_replace = os.replace
  def replace(src, dst):
    if str(dst).endswith("result.json"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_replace(src, dst)
  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(errors.DiskFull, match=r"file .*/pretrain/result.json: the disk filled while writing it"):
    stages.run("pretrain", _config(), workdir, log=lambda *_: None)
  monkeypatch.undo()
  assert stages.status(workdir, "pretrain", _config()) == "started"
  assert not [f for f in os.listdir(os.path.join(workdir, "pretrain")) if f.endswith(".tmp")]

  # 5. Space again: the same call resumes from 12, exports, finishes, keeps the last checkpoint.
  lines.clear()
  stages.run("pretrain", _config(), workdir, log=lines.append)
  said = "\n".join(lines)
  assert "pretrain: resumed from step 12" in said and "checkpoints: the stage is done: kept step 12, freed" in said
  assert sorted(os.listdir(ckpts)) == ["12"] and stages.status(workdir, "pretrain", _config()) == "done"
  assert not os.path.exists(f"{ckpts}-unreadable")  # the step moved aside goes with the others
  for x, y in zip(jax.tree.leaves(_params(straight)), jax.tree.leaves(_params(workdir))):
    np.testing.assert_array_equal(x, y)
  assert not os.path.exists(os.path.join(straight, "pretrain", "checkpoints", "4"))  # keep last

  # 6. A damaged export is named by file before Orbax opens it.
  params = os.path.join(workdir, "pretrain", "export", "params")
  victim = max((os.path.join(d, f) for d, _, fs in os.walk(params) for f in fs), key=os.path.getsize)
  with open(victim, "r+b") as fh:
    fh.truncate(os.path.getsize(victim) - 1)
  with pytest.raises(export.ExportError, match=rf"damaged \({re.escape(victim)}: .* bytes, written with"):
    export.load(os.path.join(workdir, "pretrain", "export"))
