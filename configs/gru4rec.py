"""GRU4Rec, paper §4.1.3: 3-layer GRU, hidden 1024.

  python -m uqa_jax.main --config configs/gru4rec.py --workdir workdir/gru4rec
A brief CPU run: add --config.pretrain.steps=300 --config.encoder.d_model=64 --config.data.max_len=128
It prints training loss, steps/s and ETA, then Recall/NDCG@{1,10,50} next to the popularity baseline.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("data", "pretrain")
  c.encoder.name = "gru4rec"
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 3, 1024, 8
  c.encoder.d_ff = 0
  return c
