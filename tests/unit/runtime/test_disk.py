"""A full disk: refused before a write that cannot fit, reported by path when met mid-write, and
never a partial file (runtime/disk.py, runtime/atomic.py)."""

import errno
import os

import pytest

from uqa_jax.runtime import atomic
from uqa_jax.runtime import disk
from uqa_jax.runtime import errors


def test_require_names_the_path_the_bytes_needed_and_free_and_the_newest_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: type("U", (), {"free": 5_000_000})())
  target = str(tmp_path / "ckpt" / "12")  # not yet there: its nearest existing parent's disk is asked
  with pytest.raises(errors.DiskFull) as e:
    disk.require(target, 100 << 20, "checkpoint", newest="/w/ckpt/8")
  text = str(e.value)
  assert text.startswith(f"checkpoint {target} needs about 100.0 MiB (104,857,600 bytes)")
  assert "5,000,000 bytes) free; nothing was written" in text and "newest good checkpoint is /w/ckpt/8" in text
  assert isinstance(e.value, errors.Refused) and not os.path.exists(target)


def test_a_full_disk_mid_write_is_named_and_leaves_the_previous_file(tmp_path):
  path = str(tmp_path / "result.json")
  atomic.write_json(path, {"old": 1})

  def half_then_full(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write('{"new": ')
    raise OSError(errno.ENOSPC, "No space left on device")

  with pytest.raises(errors.DiskFull, match=rf"file {path}: the disk filled while writing it \(OSError"):
    atomic.write_with(path, half_then_full)
  assert atomic.read_json(path) == {"old": 1} and os.listdir(tmp_path) == ["result.json"]


def test_write_text_is_refused_before_writing_when_it_cannot_fit(tmp_path, monkeypatch):
  monkeypatch.setattr(disk, "free_bytes", lambda p: disk.MARGIN + 10)
  with pytest.raises(errors.DiskFull, match="needs about 20 B"):
    atomic.write_text(str(tmp_path / "p.jsonl"), "x" * 20)
  assert not os.listdir(tmp_path)
  atomic.write_text(str(tmp_path / "p.jsonl"), "x" * 10)  # what fits is written


@pytest.mark.parametrize("error,full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (ValueError("RESOURCE_EXHAUSTED: Error writing local file \"/w/x\": No space left on device"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (ValueError("cannot reshape"), False),
])
def test_reported_turns_only_a_full_disk_into_diskfull_after_cleaning_up(error, full):
  cleaned = []
  with pytest.raises(errors.DiskFull if full else type(error)):
    with disk.reported("/w/x", "checkpoint", "/w/ckpt/4", cleanup=lambda: cleaned.append(1)):
      raise error
  assert cleaned == ([1] if full else [])
