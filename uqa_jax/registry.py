"""Model families chosen by name (encoders, adapters): `<package>.<name>` among the names
`choices` allows, and the settings of a shared config block the chosen one does not read.
"""

import dataclasses
import importlib


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
