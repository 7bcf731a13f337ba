"""User encoders, chosen by name: embedded sequence [B, L, D] + mask [B, L] -> states [B, L, D].

Each module exports `Model(cfg: EncoderConfig)` with
`__call__(x, mask, deterministic=True, timestamps_BxL=None)`; all are causal (step t sees only
steps <= t). Only HSTU reads the optional int32 click times; the others ignore them.
"""

import importlib

from uqa_jax import choices

NAMES = choices.ENCODERS  # gru4rec, sasrec, mamba4rec, hstu, trmpp


def get(name: str):
  """The `Model` class of encoder `name`."""
  if name not in NAMES:
    raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(NAMES)}")
  return importlib.import_module(f"uqa_jax.encoders.{name}").Model
