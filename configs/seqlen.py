"""The paper's sequence-length sweep (Table 6): the default 25M Trm++ reading the L most recent clicks.

  python -m uqa_jax.main --config configs/seqlen.py:128         # -> workdir/seqlen-128

L is one of `LENGTHS`. It is `data.max_len`, so each L builds its own data (the QA answers are
computed from exactly the window the encoder reads, so they change with L too). Everything else is
the paper's Stage 1 recipe (`configs/paper.py`).
"""

from configs import paper

LENGTHS = (32, 64, 128, 256, 512)


def get_config(length: str = "512"):
  if not length.isdigit() or int(length) not in LENGTHS:
    raise ValueError(f"configs/seqlen.py:{length}: expected one of {', '.join(map(str, LENGTHS))}")
  c = paper.get_config("trmpp")
  c.data.max_len = int(length)
  return c
