"""SASRec, paper §4.1.3: 6 layers, 8 heads, d 1024, inner 1536.

  python -m uqa_jax.main --config configs/sasrec.py --workdir workdir/sasrec
The paper's recipe (configs/paper.py) at this encoder's size; a brief CPU run of the same
encoder is `--config configs/default.py:sasrec`. It prints training loss, steps/s and ETA, then
Recall/NDCG@{1,10,50} next to the popularity baseline. Not yet measured at this size (it needs
an accelerator); at laptop size this encoder beats popularity 2.4-3.9x on Recall@10 (configs/default.py).
"""

from configs import paper


def get_config():
  c = paper.get_config("sasrec")
  c.encoder.num_layers, c.encoder.d_model, c.encoder.d_ff = 6, 1024, 1536
  return c
