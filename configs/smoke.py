"""A tiny variant for tests and quick checks: 60 users, 300 items, a 2-layer Trm++, 12 steps.

  python -m uqa_jax.main --config configs/smoke.py --workdir /tmp/uqa-smoke
Under a minute on 2 cores; the numbers mean nothing beyond "the pipeline runs".
"""

from configs import default


def get_config(encoder: str = "trmpp"):
  c = default.get_config(encoder)
  c.stages = ("data", "pretrain")  # Stage 2 needs an LLM: tests bring a tiny one (tests/tiny_llm.py)
  c.align.adapter_init = "random"  # tests that want the title fit ask for it (it refuses oracle and text users)
  s = c.data.synthetic
  s.num_users, s.num_items, s.num_categories, s.num_brands = 60, 300, 10, 30
  s.num_shops, s.num_sellers, s.median_len, s.max_len = 40, 30, 30, 80
  c.data.max_len = 64
  c.encoder.d_model = 32
  p = c.pretrain
  p.batch_size, p.steps, p.warmup_steps, p.learning_rate = 8, 12, 2, 1e-3
  p.log_every, p.checkpoint_every = 1, 4
  p.embed_dims = {"item": 16, "cate": 8, "brand": 8, "shop": 8, "seller": 8, "bpe": 8}
  c.note = ""
  return c
