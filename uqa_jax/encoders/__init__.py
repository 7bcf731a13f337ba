"""User encoders, chosen by name: embedded sequence [B, L, D] + mask [B, L] -> states [B, L, D].

Each module exports `Model(cfg: EncoderConfig)` with
`__call__(x, mask, deterministic=True, timestamps_BxL=None)`; all are causal (step t sees only
steps <= t). Only HSTU reads the optional int32 click times; the others ignore them.
"""

import functools

from uqa_jax.config import blocks
from uqa_jax.config import choices

NAMES = choices.ENCODERS  # gru4rec, sasrec, mamba4rec, hstu, trmpp
_module = functools.partial(blocks.module, __name__, "encoder", NAMES)


def get(name: str):
  """The `Model` class of encoder `name`."""
  return _module(name).Model


def reads(name: str) -> tuple[str, ...]:
  """The EncoderConfig fields encoder `name` reads besides `config.COMMON`."""
  return tuple(_module(name).READS)
