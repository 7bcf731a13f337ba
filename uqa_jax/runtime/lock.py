"""One run per workdir: `hold(workdir, command)` locks `<workdir>/run.lock` for the run's length.

The lock is the kernel's (`fcntl.flock` on the open file, held until the run ends or its process
dies, so a killed run never leaves a lock behind); the file's contents only say who holds it:
pid, host, start time and command. A second run on the same workdir stops at once with that
holder named. A run that finds the file still naming an earlier run that is no longer running
(killed before it could clear it) takes over with a message. In a multi-process run process 0
holds it and tells the others (`uqa_jax/main.py`).
"""

import contextlib
import fcntl
import json
import os
import socket
import time

from uqa_jax.runtime import errors

LOCK = "run.lock"


class WorkdirBusy(errors.Refused, RuntimeError):
  """Another run holds the workdir; the message names it."""


def _describe(h: dict) -> str:
  return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('command')}"


def _read(fd: int) -> dict | None:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 1 << 16).decode("utf-8", "replace")
  try:
    return json.loads(text) if text.strip() else None
  except json.JSONDecodeError:
    return {"pid": "?", "host": "?", "started": "?", "command": f"unreadable lock contents {text[:80]!r}"}


@contextlib.contextmanager
def hold(workdir: str, command: str, log=print):
  """Holds `workdir` for the `with` block, or raises `WorkdirBusy` naming the holder."""
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd) or {"pid": "?", "host": "?", "started": "?", "command": "(starting)"}
      raise WorkdirBusy(f"{workdir} is in use by another run ({_describe(holder)}); wait for it to end or use "
                        "another --workdir") from None
    earlier = _read(fd)
    if earlier:
      log(f"uqa-jax: taking over {path}: the run it names ({_describe(earlier)}) is no longer running")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode("utf-8"))
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # a clean end leaves the file empty: contents on the next start mean a killed run
  finally:
    os.close(fd)  # releases the lock
