"""Trm++ at the paper's default size (25M: 8 layers, d 512, 8 heads; the EncoderConfig defaults).

  python -m uqa_jax.main --config configs/trmpp.py --workdir workdir/trmpp
The paper's recipe (configs/paper.py) at this encoder's size; a brief CPU run of the same
encoder is `--config configs/default.py:trmpp`. It prints training loss, steps/s and ETA, then
Recall/NDCG@{1,10,50} next to the popularity baseline. Not yet measured at this size (it needs
an accelerator); at laptop size this encoder beats popularity 2.4-3.9x on Recall@10 (configs/default.py).
"""

from configs import paper


def get_config():
  return paper.get_config("trmpp")
