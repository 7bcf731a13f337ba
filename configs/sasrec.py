"""SASRec, paper §4.1.3: 6 layers, 8 heads, d 1024, inner 1536.

  python -m uqa_jax.main --config configs/sasrec.py --workdir workdir/sasrec
A brief CPU run: add --config.pretrain.steps=300 --config.encoder.d_model=64 --config.data.max_len=128
It prints training loss, steps/s and ETA, then Recall/NDCG@{1,10,50} next to the popularity baseline.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.stages = ("data", "pretrain")
  c.encoder.name = "sasrec"
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 6, 1024, 8
  c.encoder.d_ff = 1536
  return c
