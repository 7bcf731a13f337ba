"""The scaling configs: each Trm++ size has the paper's backbone parameter count (within 3%)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import scale
from configs import seqlen
from uqa_jax import encoders
from uqa_jax.config import blocks
from uqa_jax.encoders.config import EncoderConfig


def backbone_parameters(config) -> int:
  """Parameters of the encoder backbone alone (no item tables or head), from shapes only."""
  cfg = blocks.read(config, EncoderConfig)
  model = encoders.get(cfg.name)(cfg)
  x = jax.ShapeDtypeStruct((1, 8, cfg.d_model), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda x, mask: model.init(jax.random.PRNGKey(0), x, mask), x, mask)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))


@pytest.mark.parametrize("size", list(scale.SIZES))
def test_backbone_within_three_percent_of_the_paper(size):
  layers, d, heads, paper = scale.SIZES[size]
  config = scale.get_config(size)
  n = backbone_parameters(config)
  # the layer count and width the paper gives, and ~12 d^2 per layer (attention 4 d^2, SwiGLU 8 d^2)
  assert (config.encoder.num_layers, config.encoder.d_model, config.encoder.num_heads) == (layers, d, heads)
  assert abs(n - 12 * d * d * layers) / (12 * d * d * layers) < 0.01, n
  # within 3% of the paper's figure, or equal to it at the figure's own precision: "13M" is
  # 12.6M (4 x 12 x 512^2) rounded to two significant figures, 3.05% away from 13.0M
  assert abs(n - paper) / paper < 0.03 or _round_like(n, paper) == paper, (size, n, paper)


def _round_like(n: int, paper: float) -> float:
  """`n` rounded to as many significant figures as the paper's figure has (13e6: 2, 303e6: 3)."""
  figures = len(f"{paper:.6e}".split("e")[0].replace(".", "").rstrip("0"))
  return float(f"{n:.{figures - 1}e}")


def test_unknown_size_and_length_name_the_choices():
  with pytest.raises(ValueError, match="3m, 13m"):
    scale.get_config("2b")
  with pytest.raises(ValueError, match="32, 64"):
    seqlen.get_config("100")
  assert seqlen.get_config("64").data.max_len == 64
