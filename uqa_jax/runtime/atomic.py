"""Files written whole or not at all: to `<path>.tmp`, then renamed over `path`.

An interrupted run (a kill, a full disk) leaves the previous file or none, never a partial one
that a resumed run would read as finished. A text whose size is known is refused before writing
when its disk cannot hold it, and a full disk met while writing is `errors.DiskFull` naming the
path (`runtime/disk.py`). JSON files (results, fingerprints) go through `write_json` / `read_json`.
"""

import json
import os

from uqa_jax.runtime import disk
from uqa_jax.runtime import errors


def write_with(path: str, write_fn) -> None:
  """`write_fn(tmp_path)` writes the file; it is renamed to `path` only if that returns."""
  tmp = f"{path}.tmp"
  try:
    with disk.reported(path, "file"):
      write_fn(tmp)
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  disk.require(path, len(text.encode("utf-8")), "file")

  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  write_with(path, write)


def write_json(path: str, value) -> None:
  write_text(path, json.dumps(value, indent=2, sort_keys=True))


class CorruptFileError(errors.Refused, ValueError):
  """A JSON file that cannot be read back (truncated, overwritten): its path is in the message."""


def read_json(path: str):
  """The JSON value in `path`; a file that is not valid JSON is an error naming it."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise CorruptFileError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno}; {len(text)} "
                           "bytes): the file is damaged; delete it with its stage's outputs "
                           "(--config.restart=<stage>) or restore it") from None
