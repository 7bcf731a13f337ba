"""What an export's files should be: each file's size and SHA-256, stored beside it when it is
written and checked before it is read, so a truncated or damaged file is named by path before
Orbax or TensorStore open it (and a copied workdir is checked by content, not by path).
"""

import hashlib
import os

CHUNK = 1 << 20


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(CHUNK):
      digest.update(block)
  return digest.hexdigest()


def make(directory: str) -> dict:
  """{relative path: [bytes, sha256]} of every file under `directory`."""
  out = {}
  for base, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(base, name)
      out[os.path.relpath(path, directory)] = [os.path.getsize(path), _sha256(path)]
  return dict(sorted(out.items()))


def damaged(directory: str, expected: dict) -> str:
  """'' when `directory` holds what `expected` lists, else `damaged (<the first 3 problems>)`."""
  found = problems(directory, expected)
  return f"damaged ({'; '.join(found[:3])}{'; ...' if len(found) > 3 else ''})" if found else ""


def problems(directory: str, expected: dict) -> list[str]:
  """What differs from `expected` (from `make`): missing files, other sizes, other contents."""
  out = []
  for rel, (size, digest) in expected.items():
    path = os.path.join(directory, rel)
    if not os.path.exists(path):
      out.append(f"{path}: missing")
    elif os.path.getsize(path) != size:
      out.append(f"{path}: {os.path.getsize(path):,} bytes, written with {size:,}")
    elif _sha256(path) != digest:
      out.append(f"{path}: its contents changed since it was written (SHA-256)")
  return out
