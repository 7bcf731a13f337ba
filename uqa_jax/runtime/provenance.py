"""Which code made a result: the package version and, when the package sits in a git checkout,
its commit (and whether the tree had uncommitted changes). Recorded in every `result.json`; the
stage fingerprints hold each stage's own `VERSION` (`uqa_jax.stages`), which is what decides reuse.
"""

import functools
import importlib.metadata
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=10, check=False)
  except (OSError, subprocess.TimeoutExpired):  # no git on this machine
    return None
  return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def code() -> dict:
  """{"package": version or None, "git_commit": sha or None, "git_dirty": bool or None}; None
  where it is not known (not installed as a package, not a git checkout, no git)."""
  try:
    package = importlib.metadata.version("uqa_jax")
  except importlib.metadata.PackageNotFoundError:
    package = None
  commit = _git("rev-parse", "HEAD") if os.path.exists(os.path.join(ROOT, ".git")) else None  # a worktree: a file
  status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
  return {"package": package, "git_commit": commit, "git_dirty": None if status is None else bool(status)}
