"""Trm++ at the paper's default size (25M: 8 layers, d 512, 8 heads).

  python -m uqa_jax.main --config configs/trmpp.py --workdir workdir/trmpp
A brief CPU run: add --config.pretrain.steps=300 --config.encoder.d_model=64 --config.data.max_len=128
It prints training loss, steps/s and ETA, then Recall/NDCG@{1,10,50} next to the popularity baseline.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("data", "pretrain")
  c.encoder.name = "trmpp"
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 8, 512, 8
  c.encoder.d_ff = 0
  return c
