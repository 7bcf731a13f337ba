"""The paper's Stage 1 recipe (§4.1.3, Table 5): the base of the per-encoder configs.

25M-parameter encoder (8 layers, d 512, 8 heads), the 512 most recent clicks, batch 256,
AdamW lr 1e-4, 10 epochs, dropout 0.1. Sized for accelerators: on a 2-core CPU one step takes
minutes (see `benchmarks/encoders.py`); `configs/default.py` is the laptop-scale recipe.

  python -m uqa_jax.main --config configs/paper.py --workdir workdir/paper
"""

from configs import default


def get_config(encoder: str = "trmpp"):
  c = default.get_config(encoder)
  c.stages = ("data", "pretrain")
  c.data.max_len = 512
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 8, 512, 8
  p = c.pretrain
  p.batch_size, p.epochs, p.steps, p.learning_rate, p.warmup_steps = 256, 10, 0, 1e-4, 100
  p.log_every = 50
  return c
