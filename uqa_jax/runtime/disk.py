"""Disk space: refuse a write that cannot fit before it starts, and report one that ran out.

`require(path, nbytes, what, newest)` compares a file's expected size with the free space of
the disk it goes to; too little is `errors.DiskFull` naming the path, the bytes needed and free,
and the newest good checkpoint (what a rerun resumes from). `reported(path, what, newest)` turns
a full disk met while writing (ENOSPC, or Orbax / TensorStore's RESOURCE_EXHAUSTED) into the
same error; the writers leave no partial file behind (`atomic`, Orbax's temporary directories).
"""

import contextlib
import errno
import os
import shutil

from uqa_jax.runtime import errors

MARGIN = 64 << 20  # kept free beyond the estimate: logs, JSON results, the filesystem's own needs


def human(nbytes: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(nbytes) < 1024 or unit == "TiB":
      return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
    nbytes /= 1024
  return ""


def free_bytes(path: str) -> int:
  """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def _resume(newest: str | None) -> str:
  return (f"the newest good checkpoint is {newest}: free space and rerun the same command to resume from it"
          if newest else "free space and rerun the same command")


def require(path: str, nbytes: int, what: str, newest: str | None = None) -> None:
  """Raises DiskFull when `nbytes` (plus MARGIN) do not fit on `path`'s disk."""
  free = free_bytes(path)
  if free < nbytes + MARGIN:
    raise errors.DiskFull(f"{what} {path} needs about {human(nbytes)} ({nbytes:,} bytes) and "
                          f"{human(MARGIN)} spare, but its disk has {human(free)} ({free:,} bytes) free; "
                          f"nothing was written; {_resume(newest)}")


def is_full(error: BaseException) -> bool:
  """Whether `error` is a full disk: ENOSPC, or TensorStore's RESOURCE_EXHAUSTED as Orbax raises it."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text


@contextlib.contextmanager
def reported(path: str, what: str, newest: str | None = None, cleanup=None, nbytes: int | None = None):
  """Runs the block; a full disk inside it becomes DiskFull naming `path`, the bytes it needed
  (`nbytes`, when known) and those free after `cleanup()` (the writer's partial files); other
  errors pass unchanged."""
  try:
    yield
  except errors.DiskFull:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught (re-raised unless it is a full disk)
    if not is_full(e):
      raise
    if cleanup is not None:
      cleanup()
    free = free_bytes(path)
    needed = f"needs about {human(nbytes)} ({nbytes:,} bytes), " if nbytes is not None else ""
    raise errors.DiskFull(f"{what} {path}: the disk filled while writing it ({type(e).__name__}: "
                          f"{errors.first_line(e)}); it {needed}{human(free)} ({free:,} bytes) are free "
                          f"now that the partial file was removed; {_resume(newest)}") from e


def tree_bytes(tree) -> int:
  """Bytes of every array in a pytree (what saving it writes, before compression)."""
  import jax  # pylint: disable=import-outside-toplevel (the module is also used without JAX arrays)
  return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(tree)))


def dir_bytes(path: str) -> int:
  """Bytes of every file under `path` (0 if it does not exist)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
