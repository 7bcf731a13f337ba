"""Files written whole or not at all: to `<path>.tmp`, then renamed over `path`.

An interrupted run (a kill, a full disk) leaves the previous file or none, never a partial one
that a resumed run would read as finished. JSON files (results, fingerprints) go through
`write_json` / `read_json`.
"""

import json
import os


def write_with(path: str, write_fn) -> None:
  """`write_fn(tmp_path)` writes the file; it is renamed to `path` only if that returns."""
  tmp = f"{path}.tmp"
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  write_with(path, write)


def write_json(path: str, value) -> None:
  write_text(path, json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)
