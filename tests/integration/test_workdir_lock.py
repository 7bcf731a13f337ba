"""Two runs on one workdir through `main`: the second stops at once, naming the first."""

import os
import subprocess
import sys
import time

from tests.conftest import ROOT
from uqa_jax.runtime import lock


def test_a_second_run_on_a_busy_workdir_stops_naming_the_first(tmp_path):
  cmd = [sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(tmp_path / "w")]
  first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while not (os.path.exists(tmp_path / "w" / lock.LOCK) and (tmp_path / "w" / lock.LOCK).read_text()):
      assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
      time.sleep(0.2)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  finally:
    returncode = first.wait(timeout=600)
  assert first.poll() is not None and second.returncode != 0
  assert f"in use by another run (pid {first.pid} on" in second.stderr, second.stderr[-2000:]
  assert "Traceback" not in second.stderr
  assert returncode == 0  # the first run was not disturbed
  assert (tmp_path / "w" / lock.LOCK).read_text() == ""  # a clean end names no holder
