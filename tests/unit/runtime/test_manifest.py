"""An export's manifest names a missing, truncated or altered file."""

import os

from uqa_jax.runtime import manifest


def test_problems_name_each_missing_cut_or_changed_file(tmp_path):
  (tmp_path / "d").mkdir()
  for name, text in (("a", "alpha"), ("d/b", "bravo"), ("c", "charlie")):
    (tmp_path / name).write_text(text)
  written = manifest.make(str(tmp_path))
  assert written["d/b"][0] == 5 and len(written["d/b"][1]) == 64
  assert manifest.problems(str(tmp_path), written) == []
  os.remove(tmp_path / "a")
  (tmp_path / "d" / "b").write_text("bra")
  (tmp_path / "c").write_text("charlIe")  # same size, other bytes
  assert manifest.problems(str(tmp_path), written) == [
      f"{tmp_path}/a: missing", f"{tmp_path}/c: its contents changed since it was written (SHA-256)",
      f"{tmp_path}/d/b: 3 bytes, written with 5"]
