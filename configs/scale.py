"""The paper's encoder-size sweep (Table 5 / Figure 3): Trm++ at eight sizes, 3.2M to 1.2B.

  python -m uqa_jax.main --config configs/scale.py:25m          # -> workdir/scale-25m
  python -m uqa_jax.tools.plan --config configs/scale.py:1b --mesh data=2,fsdp=4   # memory, no run

`SIZES` maps each size to (layers, d_model, heads) and the backbone parameter count the paper
gives; the backbone (the scanned Trm++ blocks and the final norm, ~12·d²·layers) is within 3% of
it (tested). Everything else is the paper's Stage 1 recipe (`configs/paper.py`): synthetic data
unless `--config.data.source=official --config.data.path=...`. The 680m and 1b sizes need an
accelerator mesh with fsdp: `main` plans the step's memory first and stops with the figures
(and the mesh it would need) when it cannot fit the devices it has.
"""

from configs import paper

# size -> (num_layers, d_model, num_heads, the paper's backbone parameter count)
SIZES = {
    "3m": (4, 256, 4, 3.2e6),
    "13m": (4, 512, 8, 13e6),
    "25m": (8, 512, 8, 25e6),
    "57m": (8, 768, 12, 57e6),
    "85m": (12, 768, 12, 85e6),
    "303m": (24, 1024, 8, 303e6),
    "680m": (24, 1536, 12, 680e6),
    "1b": (24, 2048, 16, 1.2e9),
}


def get_config(size: str = "25m"):
  if size not in SIZES:
    raise ValueError(f"configs/scale.py:{size}: unknown size; expected one of {', '.join(SIZES)}")
  c = paper.get_config("trmpp")
  c.encoder.num_layers, c.encoder.d_model, c.encoder.num_heads, _ = SIZES[size]
  c.encoder.remat = c.encoder.d_model >= 1024  # activations of 24 layers x 512 clicks: recompute
  return c
