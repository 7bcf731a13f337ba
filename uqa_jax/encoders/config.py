"""Hyper-parameters shared by every user encoder (paper Table 5 sizes in configs/)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  name: str = "trmpp"
  d_model: int = 64  # D
  num_layers: int = 2
  num_heads: int = 2
  d_ff: int = 0  # 0: 4 * d_model (SwiGLU: 8/3 * d_model rounded)
  dropout: float = 0.1
  max_len: int = 512  # L, for learned positions and relative biases
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  # HSTU: learned bias per bucket of log time gap, when batches carry timestamps (0: off)
  time_buckets: int = 128
  # Mamba4Rec
  d_state: int = 16  # N
  d_conv: int = 4
  expand: int = 2

  @property
  def ff(self) -> int:
    return self.d_ff or 4 * self.d_model
