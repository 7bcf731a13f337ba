"""A tiny variant for tests and quick checks: 60 users, 300 items, short histories.

  python -m uqa_jax.main --config configs/smoke.py --workdir /tmp/uqa-smoke
"""

from configs import default


def get_config():
  c = default.get_config()
  s = c.data.synthetic
  s.num_users, s.num_items, s.num_categories, s.num_brands = 60, 300, 10, 30
  s.num_shops, s.num_sellers, s.median_len, s.max_len = 40, 30, 30, 80
  c.data.batch_size = 8
  c.data.max_len = 64
  return c
