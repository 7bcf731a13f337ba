"""Refusals, as opposed to defects: one base class the entry points print as one line.

A `Refused` error is raised for an input, a setting or a workdir state the run cannot use; its
message names the culprit (the config key, the file and row, the tensor, the stage) and what
was expected. `python -m uqa_jax.main` and every command-line tool print it as one line after
the program's name and exit with status 1 (the tools: 2, argparse's status for bad input); `--debug` shows its traceback too. Any other
exception is a defect in the code and keeps its traceback.
"""

import sys


class Refused(Exception):
  """Base of every error that refuses what the user gave: the message is the whole story.
  `stage` (set by the runner) names the stage it stopped, when the message does not."""
  stage: str | None = None


def describe(error: BaseException) -> str:
  """The one line a refusal is shown as: its message, after `[stage] ` when it has one."""
  message = str(error)
  stage = getattr(error, "stage", None)
  return f"[{stage}] {message}" if stage and not message.startswith("[") else message


class DiskFull(Refused, OSError):
  """Too little free space for a file the run is about to write (or a write stopped by ENOSPC)."""


def first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of `error`'s message, cut to `limit` characters ('' for an empty message):
  how a wrapped library error is quoted inside a refusal."""
  lines = str(error).splitlines()
  return lines[0][:limit] if lines else ""


def exit_refused(program: str, error: Exception, debug: bool, status: int = 1) -> None:
  """Ends the process on `error`: one line `program: message` on stderr and exit `status`, or,
  with `debug`, the traceback as Python prints it."""
  if debug:
    raise error
  print(f"{program}: {describe(error)}", file=sys.stderr, flush=True)
  sys.exit(status)
