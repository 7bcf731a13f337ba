"""The benchmarked training step of Trm++ / SASRec, built from the library exactly as Stage 1 runs it.

Shapes (defaults): 4 layers, d 512, 4 heads, batch 8 x 512, item-id-only input (`no_side`) with
a 100,000 x 128 item table, full-softmax NIP loss (`sl`), AdamW, dropout 0.1. Used by
`benchmarks/vs_torch.py` and `benchmarks/profile_step.py`; the PyTorch twin is
`benchmarks/torch_encoders.py`.
"""

import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from configs import paper
from uqa_jax.config import blocks
from uqa_jax.config.recipes import PretrainConfig
from uqa_jax.data import schema
from uqa_jax.stages import pretrain

sys.path.insert(0, os.path.dirname(__file__))  # also when imported as benchmarks.step_setup
from timing import best_time, matmul_rate, median_time, write_result  # noqa: E402,F401 (re-exported for the scripts)


@dataclasses.dataclass(frozen=True)
class Shapes:
  layers: int = 4
  d_model: int = 512
  heads: int = 4
  batch: int = 8
  length: int = 512
  items: int = 100_000
  item_dim: int = 128
  dropout: float = 0.1
  sl_chunk: int = 0  # 0: the library's default


def config(encoder: str, s: Shapes, **encoder_overrides):
  c = paper.get_config(encoder)
  c.data.max_len = s.length
  c.encoder.update(num_layers=s.layers, d_model=s.d_model, num_heads=s.heads, dropout=s.dropout,
                   input_variant="no_side", **encoder_overrides)
  c.pretrain.embed_dims = {"item": s.item_dim}
  if s.sl_chunk:
    c.pretrain.sl_chunk = s.sl_chunk
  return c


def batch(s: Shapes, seed=0):
  """A random full-length batch: item ids in 1..items-1 (the model reads only the item id)."""
  rng = np.random.default_rng(seed)
  return {schema.ITEM_COLUMN: rng.integers(1, s.items, size=(s.batch, s.length)).astype(np.int32),
          "lengths": np.full((s.batch,), s.length, np.int32), "valid": np.ones((s.batch,), bool)}


def build(encoder: str, s: Shapes, **encoder_overrides):
  """-> (step(state, batch) -> (state, metrics), state, batch, model, PretrainConfig)."""
  c = config(encoder, s, **encoder_overrides)
  return build_from_config(c, {"vocab_sizes": {"item": s.items}}, batch(s))


def build_from_config(c, info, b):
  """The Stage 1 train step of config `c` on data described by `info`, its first state at `b`."""
  model = pretrain.make_model(c, info)
  params = jax.jit(lambda r: model.init({"params": r, "dropout": r}, b)["params"])(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                        is_leaf=lambda x: hasattr(x, "value"))
  p = blocks.read(c, PretrainConfig)
  tx = pretrain.make_optimizer(p, 1000)
  state = pretrain.TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                              rng=jax.random.PRNGKey(1))
  step = functools.partial(pretrain.train_step, model=model, tx=tx, cfg=p)
  return step, state, b, model, p


