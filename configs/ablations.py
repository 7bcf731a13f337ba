"""The paper's ablations and the text baselines on the default benchmark, one workdir per variant.

  make ablations      # every variant below, then the `full` run's report with all of them
  python -m uqa_jax.main --config configs/ablations.py:no_text   # one variant -> workdir/ablations-no_text

Variants (each is configs/default.py with one change; same data, seed and budget):
  full            the default (Trm++, full item info, softmax NIP loss); it also evaluates the
                  zero-shot text baselines text20/text50 and the floors, and its report
                  includes every other variant's workdir (run it last)
  no_text, no_side  Table 3: the encoder without the text features / with the item id only
  cl              Table 4: the encoder pre-trained with the contrastive (InfoNCE) loss
  zeros           control: Stage 2 with zeros in place of the encoder's states
  random_encoder  control: Stage 2 with an untrained encoder of the same architecture
On 2 CPU cores each variant takes about as long as `make demo`, the `full` one longer (the
text50 prompts are ~15x longer than the soft prompt).
"""

from configs import default

VARIANTS = ("no_text", "no_side", "cl", "zeros", "random_encoder", "full")


def get_config(variant: str = "full"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/ablations.py:{variant}: unknown variant; expected one of {', '.join(VARIANTS)}")
  c = default.get_config()
  c.evaluate.runs = ("aligned",)
  if variant in ("no_text", "no_side"):
    c.encoder.input_variant = variant
  elif variant == "cl":
    c.pretrain.loss = "cl"
  elif variant in ("zeros", "random_encoder"):
    c.align.user = variant
  else:
    c.evaluate.runs = ("aligned", "shuffled_user", "text20", "text50", "floor")
    c.report.include = tuple(f"workdir/ablations-{v}" for v in VARIANTS if v != "full")
  return c
