"""GRU4Rec, paper §4.1.3: 3-layer GRU, hidden 1024.

  python -m uqa_jax.main --config configs/gru4rec.py --workdir workdir/gru4rec
The paper's recipe (configs/paper.py) at this encoder's size; a brief CPU run of the same
encoder is `--config configs/default.py:gru4rec`. It prints training loss, steps/s and ETA, then
Recall/NDCG@{1,10,50} next to the popularity baseline. Not yet measured at this size (it needs
an accelerator); at laptop size this encoder beats popularity 2.4-3.9x on Recall@10 (configs/default.py).
"""

from configs import paper


def get_config():
  c = paper.get_config("gru4rec")
  c.encoder.num_layers, c.encoder.d_model = 3, 1024
  return c
