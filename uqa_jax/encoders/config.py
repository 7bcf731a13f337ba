"""The `encoder` config block: hyper-parameters shared by every user encoder.

Defaults are the paper's default size (25M: 8 layers, d 512, 8 heads, Table 5); `configs/default.py`
shrinks them for laptops. Every encoder reads `COMMON`; each encoder module lists in `READS` the
other fields it reads, and `check_reads` refuses a config that sets a field its encoder ignores
(e.g. `num_heads` on GRU4Rec), so no setting is silently dead.
"""

import dataclasses
from typing import ClassVar

from uqa_jax import encoders
from uqa_jax.config import blocks
from uqa_jax.config.blocks import RUN_ONLY

DTYPES = ("float32", "bfloat16", "float16")  # compute and parameter dtypes
# the kernels each encoder offers (encoders/common.py picks "auto"'s); Mamba4Rec's scans (mamba4rec.SCANS)
ATTENTION_IMPLS = {"trmpp": ("xla", "cudnn"), "sasrec": ("xla", "cudnn"), "hstu": ("xla", "pallas")}
SCAN_IMPLS = ("auto", "associative", "sequential")
COMMON = ("name", "input_variant", "d_model", "num_layers", "dropout", "dtype", "param_dtype", "max_len")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  BLOCK: ClassVar[str] = "encoder"
  DERIVED: ClassVar[dict] = {"max_len": "data.max_len"}  # set by the run, never by the block
  LIMITS: ClassVar[dict] = {"d_model": ">= 1", "num_layers": ">= 1", "num_heads": ">= 1", "d_ff": ">= 0",
                            "dropout": "in [0, 1)", "max_len": ">= 1", "time_buckets": ">= 0", "d_state": ">= 1",
                            "d_conv": ">= 1", "expand": ">= 1"}
  name: str = "trmpp"  # uqa_jax.config.choices.ENCODERS
  input_variant: str = "full"  # full | no_text | no_side (paper Table 3)
  d_model: int = 512  # D
  num_layers: int = 8
  num_heads: int = 8
  d_ff: int = 0  # 0: 4 * d_model (SwiGLU: 8/3 * d_model rounded)
  dropout: float = 0.1
  max_len: int = 512  # L, for learned positions and relative biases (the run sets data.max_len)
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  # Attention kernel (Trm++, SASRec, HSTU): "auto" picks per platform (common.attention_impl);
  # "xla" is the plain jnp / XLA path everywhere; "cudnn" (Trm++, SASRec: jax.nn.dot_product_attention's
  # cuDNN kernel, GPU, bfloat16/float16); "pallas" (HSTU: the fused kernel, uqa_jax/encoders/hstu_pallas.py).
  # How, not what: tested equal, so not fingerprinted (a run may resume on another platform).
  attention_impl: str = dataclasses.field(default="auto", metadata=RUN_ONLY)
  # Mamba4Rec's selective scan: "auto" (sequential on CPU, associative elsewhere), "associative"
  # (log depth, `jax.lax.associative_scan`) or "sequential" (`lax.scan`); see mamba4rec.scan_fn.
  scan_impl: str = dataclasses.field(default="auto", metadata=RUN_ONLY)
  # HSTU: learned bias per bucket of log time gap, when batches carry timestamps (0: off)
  time_buckets: int = 128
  # Mamba4Rec
  d_state: int = 16  # N
  d_conv: int = 4
  expand: int = 2

  @property
  def ff(self) -> int:
    return self.d_ff or 4 * self.d_model

  def check_block(self) -> None:
    """What the chosen encoder reads, and the settings' relations (checked when the block is read)."""
    check_reads(self, encoders.reads(self.name))
    for key in ("dtype", "param_dtype"):
      if getattr(self, key) not in DTYPES:
        raise ValueError(f"{key}={getattr(self, key)!r}; expected one of {', '.join(DTYPES)}")
    impls = ("auto",) + ATTENTION_IMPLS.get(self.name, ())
    if self.attention_impl not in impls:
      raise ValueError(f"attention_impl={self.attention_impl!r}: {self.name} offers {', '.join(impls)}")
    if self.scan_impl not in SCAN_IMPLS:
      raise ValueError(f"scan_impl={self.scan_impl!r}; expected one of {', '.join(SCAN_IMPLS)}")
    if "num_heads" in encoders.reads(self.name) and self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")


def check_reads(cfg: EncoderConfig, reads) -> None:
  """Raises ValueError if `cfg` sets, away from its default, a field outside COMMON and `reads`."""
  dead = blocks.unread(cfg, COMMON + tuple(reads))
  if dead:
    raise ValueError(f"{', '.join(f'{k}={getattr(cfg, k)!r}' for k in dead)}: not read by {cfg.name} "
                     f"(it reads {', '.join(COMMON[2:-1] + tuple(sorted(reads)))}); remove "
                     f"{'them' if len(dead) > 1 else 'it'} from the config")
