"""Soft-prompt adapters, chosen by name: encoder states [B, L, D] + mask [B, L] -> soft tokens [B, K, d_llm].

Each module exports `Model(cfg: AdapterConfig)` with `__call__(states_BxLxD, mask_BxL)` and
`READS` (the AdapterConfig fields it reads besides `config.COMMON`), and `num_tokens(cfg)` (K).
Every adapter computes in float32, zeroes padded states with `where` (so NaN or garbage there
never reaches a valid output), and ends in `common.OutputNorm`: an RMSNorm whose learned scale
starts at the RMS of the LLM's token embeddings, so soft tokens enter the LLM at the size real
tokens have.
"""

import functools

from uqa_jax.config import blocks
from uqa_jax.config import choices

NAMES = choices.ADAPTERS  # mean, mlp, recent, qformer
_module = functools.partial(blocks.module, __name__, "adapter", NAMES)


def get(name: str):
  """The `Model` class of adapter `name`."""
  return _module(name).Model


def reads(name: str) -> tuple[str, ...]:
  return tuple(_module(name).READS)


def num_tokens(cfg) -> int:
  """K, the number of soft tokens adapter `cfg.name` emits."""
  return _module(cfg.name).num_tokens(cfg)
