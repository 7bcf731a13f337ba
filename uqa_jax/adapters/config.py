"""The `adapter` config block: which adapter turns encoder states into soft tokens, and its size.

`d_llm` and `embed_rms` are derived by the run from the LLM (its width and the RMS of its token
embeddings); a config never sets them. Every adapter reads `COMMON`; each adapter module lists
in `READS` the other fields it reads, and `check_reads` refuses a config that sets a field its
adapter ignores.
"""

import dataclasses
from typing import ClassVar

from uqa_jax import adapters
from uqa_jax.config import blocks

COMMON = ("name", "d_llm", "embed_rms")


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  BLOCK: ClassVar[str] = "adapter"
  LIMITS: ClassVar[dict] = {"num_tokens": ">= 1", "d_hidden": ">= 0", "num_queries": ">= 1", "num_layers": ">= 1",
                            "num_heads": ">= 1", "d_model": ">= 1"}
  name: str = "mean"  # uqa_jax.config.choices.ADAPTERS; `mean` is the official default
  d_llm: int = 0  # the LLM's width (derived)
  embed_rms: float = 1.0  # RMS of the LLM's token embeddings: the output norm's initial scale (derived)
  num_tokens: int = 4  # mlp: tokens out; recent: the last valid states used (plus one mean token)
  pool: str = "mean"  # mlp: mean | last (valid state)
  d_hidden: int = 0  # mlp: hidden width (0: d_llm)
  num_queries: int = 16  # qformer: learned queries = tokens out
  num_layers: int = 2  # qformer
  num_heads: int = 4  # qformer
  d_model: int = 256  # qformer: width of the queries

  def __post_init__(self):
    if self.pool not in ("mean", "last"):
      raise ValueError(f"adapter.pool={self.pool!r}; expected mean or last")

  def check_block(self) -> None:
    check_reads(self, adapters.reads(self.name))
    if "num_heads" in adapters.reads(self.name) and self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")


def check_reads(cfg: AdapterConfig, reads) -> None:
  """Raises ValueError if `cfg` sets, away from its default, a field its adapter does not read."""
  dead = blocks.unread(cfg, COMMON + tuple(reads))
  if dead:
    raise ValueError(f"{', '.join(f'adapter.{k}={getattr(cfg, k)!r}' for k in dead)}: not read by "
                     f"adapter {cfg.name!r} (it reads {', '.join(sorted(reads)) or 'nothing else'})")
