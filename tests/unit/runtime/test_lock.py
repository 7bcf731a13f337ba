"""One run per workdir (runtime/lock.py): a live holder is named, a dead one's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from uqa_jax.runtime import lock


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_goes_with_the_run(tmp_path):
  with lock.hold(str(tmp_path), "python -m uqa_jax.main --config A"):
    held = json.loads((tmp_path / lock.LOCK).read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(lock.WorkdirBusy, match=rf"in use by another run \(pid {os.getpid()} on .* --config A\)"):
      with lock.hold(str(tmp_path), "python -m uqa_jax.main --config B"):
        pass
    assert (tmp_path / lock.LOCK).exists()  # the refused run did not remove the holder's lock
  assert not (tmp_path / lock.LOCK).exists()


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  (tmp_path / lock.LOCK).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "command": "old",
                                                "started": "then"}))
  said = []
  with lock.hold(str(tmp_path), "new", log=said.append):
    assert json.loads((tmp_path / lock.LOCK).read_text())["command"] == "new"
  assert said and f"pid {gone.pid}" in said[0] and "no longer running" in said[0]


def test_a_lock_from_another_host_is_never_guessed_stale(tmp_path):
  (tmp_path / lock.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "theirs", "started": "t"}))
  with pytest.raises(lock.WorkdirBusy, match=r"on elsewhere .* delete .*run\.lock"):
    with lock.hold(str(tmp_path), "mine"):
      pass
