"""User encoders, chosen by name: embedded sequence [B, L, D] + mask [B, L] -> states [B, L, D].

Each module exports `Model(cfg: EncoderConfig)` with
`__call__(x, mask, deterministic=True, timestamps_BxL=None)`; all are causal (step t sees only
steps <= t). Only HSTU reads the optional int32 click times; the others ignore them.
"""

import importlib

from uqa_jax import choices

NAMES = choices.ENCODERS  # gru4rec, sasrec, mamba4rec, hstu, trmpp


def _module(name: str):
  if name not in NAMES:
    raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(NAMES)}")
  return importlib.import_module(f"uqa_jax.encoders.{name}")


def get(name: str):
  """The `Model` class of encoder `name`."""
  return _module(name).Model


def reads(name: str) -> tuple[str, ...]:
  """The EncoderConfig fields encoder `name` reads besides `config.COMMON`."""
  return tuple(_module(name).READS)
