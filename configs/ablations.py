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
  oracle_titles   diagnostic: Stage 2 with each click's mean title embedding from the LLM in
                  place of the encoder's states (can the LLM learn to read soft tokens at all?);
                  also evaluated with shuffled_user, for its answer-NLL gain
  text20, text50  baselines aligned on the same budget: no encoder, the last 20 / 50 clicked
                  titles written into every prompt, the LLM fine-tuned on them (`align.user`)
On 2 CPU cores each variant takes about as long as `make demo`; `text20`/`text50` and `full`
longer (their prompts are ~8x / ~17x longer than the soft prompt's).
"""

from configs import default

VARIANTS = ("no_text", "no_side", "cl", "zeros", "random_encoder", "oracle_titles", "text20", "text50", "full")
TEXT_MAX_LEN = {"text20": 512, "text50": 1024}  # chat tokens with the titles in: ~290 / ~640 on average
# text20's batches cut to these (text, answer) widths: a batch's longest chat is 285-360 tokens
# (median 306; default_full seed 0, 400 batches of 8), so most batches take 320 instead of 512
# (widths cut padding only: the numbers change by float rounding at most). text50's lengths are
# not measured: no widths. A multi-process run refuses widths: pass --config.input.widths="()".
TEXT_WIDTHS = {"text20": ((320, 40), (384, 40)), "text50": ()}


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
  elif variant == "oracle_titles":
    c.align.user, c.align.adapter_init = variant, "random"  # its map starts as the identity instead
    c.evaluate.runs = ("aligned", "shuffled_user")
  elif variant in TEXT_MAX_LEN:
    c.align.user, c.input.max_text_len, c.input.widths = variant, TEXT_MAX_LEN[variant], TEXT_WIDTHS[variant]
    c.align.adapter_init = "random"  # no soft tokens, no adapter
    c.evaluate.runs = ("aligned", "shuffled_user")  # does the text-aligned LLM read the history?
  else:
    c.evaluate.runs = ("aligned", "shuffled_user", "text20", "text50", "floor")
    c.report.include = tuple(f"workdir/ablations-{v}" for v in VARIANTS if v != "full")
  c.note = ""  # the demo's scale note is about configs/default.py alone
  return c
