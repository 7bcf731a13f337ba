"""A brief CPU Stage 1 run of one encoder on the default synthetic data (minutes, not days).

  python -m uqa_jax.main --config configs/brief.py:gru4rec --workdir workdir/brief-gru4rec
The part after the colon names the encoder (gru4rec | sasrec | mamba4rec | hstu | trmpp).
One recipe for all five: width 64, 2 layers, 2 heads, the 128 most recent items, batch 32,
1,000 AdamW steps at lr 3e-3 after 100 warm-up steps. It prints loss, steps/s and ETA, then
Recall/NDCG next to the popularity baseline. `benchmarks/pretrain_table.py` runs all five.
"""

from configs import default


def get_config(encoder="trmpp"):
  c = default.get_config()
  c.stages = ("data", "pretrain")
  c.encoder.name = encoder
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads = 2, 64, 2
  c.data.max_len = 128
  p = c.pretrain
  p.batch_size, p.steps, p.warmup_steps, p.learning_rate = 32, 1000, 100, 3e-3
  p.log_every, p.checkpoint_every = 100, 500
  return c
