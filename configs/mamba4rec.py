"""Mamba4Rec: 4 selective-SSM blocks, d 256, state 16 (the [B, L, 2d, N] scan state bounds the size).

  python -m uqa_jax.main --config configs/mamba4rec.py --workdir workdir/mamba4rec
The paper's recipe (configs/paper.py) at this encoder's size; a brief CPU run of the same
encoder is `--config configs/default.py:mamba4rec`. It prints training loss, steps/s and ETA, then
Recall/NDCG@{1,10,50} next to the popularity baseline. Not yet measured at this size (it needs
an accelerator); at laptop size this encoder beats popularity 2.4-3.9x on Recall@10 (configs/default.py).
"""

from configs import paper


def get_config():
  c = paper.get_config("mamba4rec")
  c.encoder.num_layers, c.encoder.d_model = 4, 256
  c.pretrain.batch_size = 64  # the scan state is [B, L, 2d, N] float32 per layer
  return c
