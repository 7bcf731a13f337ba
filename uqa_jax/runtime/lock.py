"""One run per workdir: `hold(workdir, command)` makes `<workdir>/run.lock` for the run's length.

The lock is created atomically (`O_CREAT | O_EXCL`) and holds who made it: pid, host, start
time and command. A second run on the same workdir stops at once with that holder named. A lock
whose pid is gone on this host (a killed run) is taken over with a message; one from another
host is never guessed stale: the message says how to remove it. In a multi-process run only
process 0 holds it (`uqa_jax/main.py`).
"""

import contextlib
import json
import os
import socket
import time

LOCK = "run.lock"


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir; the message names it."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: alive
    return True
  return True


def _holder(path: str) -> dict | None:
  """The lock's contents; None when it vanished or is still being written."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.loads(f.read())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _describe(h: dict) -> str:
  return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('command')}"


@contextlib.contextmanager
def hold(workdir: str, command: str, log=print):
  """Holds `workdir` for the `with` block, or raises `WorkdirBusy` naming the holder."""
  path = os.path.join(workdir, LOCK)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _holder(path)
      if holder is None:  # being written this instant, or just removed: look again
        time.sleep(0.2)
        holder = _holder(path)
        if holder is None:
          continue
      if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
        log(f"uqa-jax: taking over {path}: its run ({_describe(holder)}) is no longer running")
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      raise WorkdirBusy(f"{workdir} is in use by another run ({_describe(holder)}); wait for it to end or use "
                        f"another --workdir" + ("" if holder.get("host") == me["host"] else
                                                f" (if that run is gone, delete {path})")) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(json.dumps(me))
    break
  else:
    raise WorkdirBusy(f"{path}: could not be taken (another run keeps making it)")
  try:
    yield
  finally:
    if (_holder(path) or {}).get("pid") == me["pid"]:
      os.remove(path)
