"""One run per workdir (runtime/lock.py): a live holder is named, a killed one leaves no lock."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from uqa_jax.runtime import lock

HOLDER = """
import sys, time
from uqa_jax.runtime import lock
with lock.hold(sys.argv[1], "the holder"):
  print("held", flush=True)
  time.sleep(60)
"""


def _holding(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_clean_end_frees_it(tmp_path):
  with lock.hold(str(tmp_path), "python -m uqa_jax.main --config A"):
    held = json.loads((tmp_path / lock.LOCK).read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(lock.WorkdirBusy, match=rf"in use by another run \(pid {os.getpid()} on .* --config A\)"):
      with lock.hold(str(tmp_path), "python -m uqa_jax.main --config B"):
        pass
    assert json.loads((tmp_path / lock.LOCK).read_text())["command"].endswith("--config A")  # left as it was
  said = []
  with lock.hold(str(tmp_path), "again", log=said.append):
    pass
  assert not said  # a clean end is not a takeover


def test_another_process_holding_it_is_named_and_its_kill_frees_the_workdir(tmp_path):
  proc = _holding(tmp_path)
  try:
    with pytest.raises(lock.WorkdirBusy, match=rf"pid {proc.pid} on .*: the holder"):
      with lock.hold(str(tmp_path), "mine"):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  said = []
  with lock.hold(str(tmp_path), "mine", log=said.append):  # the kernel released it with the process
    assert json.loads((tmp_path / lock.LOCK).read_text())["command"] == "mine"
  assert said and f"pid {proc.pid}" in said[0] and "no longer running" in said[0]
