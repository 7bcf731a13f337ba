"""Config blocks are dataclasses: one source of defaults, strict keys, fingerprints; and the
model families chosen by name (encoders, adapters).

A config file holds each block as an `ml_collections.ConfigDict` made by `block(cls, ...)`
(every field of `cls` with its default, so `--config.<block>.<field>=...` overrides work);
a stage turns it back into `cls` with `build`, which raises on a key `cls` does not have.
Fields marked `RUN_ONLY` (logging and checkpoint cadence) change how a run reports, not what
it computes, so they stay out of the stage fingerprints. A field added after workdirs exist
is marked `added_later(value)`: at `value` (what the code did before the field existed) it stays
out of the fingerprint, so those workdirs stay valid; any other value enters it.

Ranges are data: a block's `LIMITS` maps a field to its rule (">= 1", "> 0", "in [0, 1)"; a
tuple's rule holds for each element), checked by `build` when the block is read, so an
impossible number is refused by key, value and rule before any work.

A family (`module`) is `<package>.<name>` among the names `choices` allows; `unread` lists the
settings of a shared block that the chosen member does not read, which callers refuse.

ml_collections is imported only where a block is made (`block`), so the model packages can use
this module on a machine without it (the GPU checks import the encoders alone).
"""

import dataclasses
import importlib
import math
import re
import typing

from uqa_jax.runtime import errors

# dataclasses.field(metadata=RUN_ONLY): a setting that changes how a run goes, not what it
# computes; left out of stage fingerprints.
RUN_ONLY = {"fingerprint": False}


def added_later(old_behaviour) -> dict:
  """Field metadata: the value at which the field does what the code did before it existed."""
  return {"omit_when": old_behaviour}


class ConfigError(errors.Refused, ValueError):
  """A config key or value that does not fit its block; the message names the key."""


_RULE = re.compile(r"^(>=|>|<=|<) *(-?[0-9.e+-]+)$|^in ([\[(]) *(-?[0-9.e+-]+), *(-?[0-9.e+-]+) *([\])])$")


def within(value, rule: str) -> bool:
  """Whether number `value` obeys `rule`: ">= a", "> a", "<= a", "< a", or "in [a, b]" with
  either end open ("(", ")")."""
  m = _RULE.match(rule)
  if not m:
    raise ValueError(f"malformed limit rule {rule!r}")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    return False  # not a number, or inf / nan: no rule holds
  if m.group(1):
    bound = float(m.group(2))
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[m.group(1)]
  low, high = float(m.group(4)), float(m.group(5))
  return ((value >= low if m.group(3) == "[" else value > low)
          and (value <= high if m.group(6) == "]" else value < high))


def check_limits(obj, where: str) -> None:
  """Every field of dataclass `obj` named in its class's `LIMITS` obeys its rule; the first that
  does not is a ConfigError naming `where.field`, the value and the rule."""
  check_values(type(obj), {name: getattr(obj, name) for name in getattr(type(obj), "LIMITS", {})}, where)


def check_values(cls, values: dict, where: str) -> None:
  """`check_limits` on the `values` given for some fields of `cls`, before it is built (so a range
  is named before a relation between fields that assumes it)."""
  for name, rule in getattr(cls, "LIMITS", {}).items():
    if name not in values:
      continue
    value = values[name]
    several = isinstance(value, (tuple, list, dict))
    elements = (value.values() if isinstance(value, dict) else value) if several else (value,)
    if not all(within(v, rule) for v in elements):
      raise ConfigError(f"config {where}.{name}={value!r}: expected {rule}" + (" for each element" if several else ""))


def _plain(value):
  return value.to_dict() if hasattr(value, "to_dict") else value  # an ml_collections.ConfigDict


def _nested(cls) -> dict[str, type]:
  """Fields of `cls` whose type is itself a dataclass (built recursively)."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def build(cls, block, where: str, **derived):
  """`cls(**block, **derived)`; an unknown key is a ConfigError naming it and the valid keys.

  `derived` are fields the run fills in from elsewhere (e.g. the encoder's `max_len` from
  `data.max_len`), and `cls.RUN_FIELDS` (optional) those a stage sets for its run (the input
  block's batch size); a block that sets either is an error too, so no value has two sources.
  """
  values = dict(_plain(block) or {})
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in getattr(cls, "RUN_FIELDS", ())]
  unknown = sorted(set(values) - set(fields))
  if unknown:
    valid = ", ".join(f for f in fields if f not in derived)
    raise ConfigError(f"config {where}: unknown key{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(unknown)}; valid keys: {valid}")
  clash = sorted(set(values) & set(derived))
  if clash:
    raise ConfigError(f"config {where}.{clash[0]}: not a setting of this block (it is derived by the run)")
  for name, sub in _nested(cls).items():
    if name in values:
      values[name] = build(sub, values[name], f"{where}.{name}")
  check_values(cls, {**values, **derived}, where)
  try:
    obj = cls(**values, **derived)
  except ConfigError:
    raise  # a nested block's, already naming its key
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config {where}: {e}") from e
  check_limits(obj, where)
  return obj


def read(config, cls, **derived):
  """The run's block of `cls` (`config[cls.BLOCK]`) as a `cls`: the one accessor every stage uses.

  `cls.DERIVED` (optional) maps fields the run fills from other blocks to their dotted key
  (the encoder's `max_len` is `data.max_len`); `derived` adds fields the run computes (the
  adapter's `d_llm` from the LLM). `cls.check_block()` (optional) runs after construction: a
  ValueError it raises (a family member that does not read a field the block sets) becomes a
  ConfigError naming the block.
  """
  for field, key in getattr(cls, "DERIVED", {}).items():
    block_name, _, name = key.partition(".")
    derived.setdefault(field, config[block_name][name])
  obj = build(cls, config[cls.BLOCK], cls.BLOCK, **derived)
  if hasattr(obj, "check_block"):
    try:
      obj.check_block()
    except ValueError as e:
      raise ConfigError(f"config {cls.BLOCK}: {e}") from None
  return obj


def block(cls, *, exclude: tuple[str, ...] = (), **overrides):
  """The config block for `cls` (an `ml_collections.ConfigDict`): every field at its default,
  `overrides` applied (checked)."""
  import ml_collections  # pylint: disable=import-outside-toplevel (see the module doc)
  exclude = tuple(exclude) + tuple(getattr(cls, "RUN_FIELDS", ()))  # set by each run, never by the block
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"{cls.__name__}: unknown fields {unknown}; valid: {fields}")
  values = dataclasses.asdict(cls(**overrides))
  return ml_collections.ConfigDict({k: values[k] for k in fields})


def fingerprint(obj, keep=None) -> dict:
  """The fields of dataclass `obj` that change results (not `RUN_ONLY`), as plain data.

  `keep` (optional): the only field names to include, e.g. the fields an encoder reads.
  """
  out = {}
  for f in dataclasses.fields(obj):
    if f.metadata.get("fingerprint", True) and (keep is None or f.name in keep):
      value = getattr(obj, f.name)
      if "omit_when" in f.metadata and value == f.metadata["omit_when"]:
        continue
      out[f.name] = fingerprint(value) if dataclasses.is_dataclass(value) else value
  return out


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
