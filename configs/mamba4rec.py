"""Mamba4Rec: 4 selective-SSM blocks, d 256, state 16 (the [B, L, 2d, N] scan state bounds the size).

  python -m uqa_jax.main --config configs/mamba4rec.py --workdir workdir/mamba4rec
A brief CPU run: add --config.pretrain.steps=300 --config.encoder.d_model=64 --config.data.max_len=128
It prints training loss, steps/s and ETA, then Recall/NDCG@{1,10,50} next to the popularity baseline.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("data", "pretrain")
  c.encoder.name = "mamba4rec"
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 4, 256, 8
  c.encoder.d_state = 16
  c.pretrain.batch_size = 64  # the scan state is [B, L, 2d, N] float32 per layer
  return c
