"""Atomic writes: a write that fails leaves the previous file and no temporary behind."""

import os

import pytest

from uqa_jax.runtime import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "result.json")
  atomic.write_text(path, "old")

  def half(tmp):
    with open(tmp, "w") as f:
      f.write("par")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    atomic.write_with(path, half)
  assert open(path).read() == "old" and os.listdir(tmp_path) == ["result.json"]
  atomic.write_text(path, "new")
  assert open(path).read() == "new" and os.listdir(tmp_path) == ["result.json"]
