"""MovieLens-100k (from the recbole wheel) through the same pipeline as the default.

  python -m uqa_jax.main --config configs/movielens.py --workdir workdir/movielens

Prints the import statistics (100,000 ratings, 943 users), rows per file and the checker's verdict.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.source = "movielens"
  return c
