"""Model families chosen by name (encoders, adapters): `<package>.<name>` among the names
`choices` allows, and the settings of a shared config block the chosen one does not read.
"""

import dataclasses
import importlib

# dataclasses.field(metadata=RUN_ONLY): a setting that changes how a run goes, not what it
# computes; left out of stage fingerprints (config_blocks, which re-exports it). Here, in a
# module without ml_collections, so the encoders' config can use it on any machine.
RUN_ONLY = {"fingerprint": False}


def module(package: str, kind: str, names, name: str):
  """The module `package.name`; an unknown name is an error listing the valid ones."""
  if name not in names:
    raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(names)}")
  return importlib.import_module(f"{package}.{name}")


def unread(obj, read) -> list[str]:
  """Fields of dataclass `obj` set away from their default that are not in `read`.

  A family's models read some fields of its shared block; a setting the chosen model ignores
  would be silently dead, so callers refuse these.
  """
  default = type(obj)()
  return [f.name for f in dataclasses.fields(obj)
          if f.name not in read and getattr(obj, f.name) != getattr(default, f.name)]
