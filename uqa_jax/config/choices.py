"""The valid names a config may use, checked at start-up. One list per choice.

Implementations register under exactly these names (`stages/<name>.py`, `encoders/<name>.py`);
tests keep the lists and the modules in step.
"""

from uqa_jax.config.blocks import ConfigError

STAGES = ("data", "pretrain", "align", "evaluate", "diagnose", "report")  # pipeline order
DATA_SOURCES = ("synthetic", "movielens", "official")
ENCODERS = ("gru4rec", "sasrec", "mamba4rec", "hstu", "trmpp")
INPUT_VARIANTS = ("full", "no_text", "no_side")  # paper Table 3 rows
ADAPTERS = ("mean", "mlp", "recent", "qformer")  # mean: the official default
ALIGN_MODES = ("adapter", "full")  # adapter-only or full fine-tuning
# The real user, the built-in controls, the oracle reader (soft tokens from the LLM's own
# embeddings of the clicked titles: can the LLM learn to read soft tokens at all?), and the text
# baselines (no encoder: the last N clicked titles written into the prompt), on the same budget.
TEXT_CLICKS = {"text20": 20, "text50": 50}
ORACLE = "oracle_titles"
ALIGN_USERS = ("encoder", "zeros", "random_encoder", ORACLE, *TEXT_CLICKS)
RECONSTRUCT_FIELDS = ("title", "category", "brand")  # what a reconstruction row asks for (data/reconstruct.py)
ADAPTER_INITS = ("random", "titles")  # titles: the token map fitted to the clicked titles' LLM embeddings
SPLICE_PLACES = ("prefix", "placeholder")  # where soft tokens enter the LLM input
NIP_LOSSES = ("sl", "cl")
KEEP_CHECKPOINTS = ("none", "last", "all")  # what a finished training stage keeps (runtime/checkpoint.prune)
# Stage 3: the aligned model, the free shuffled-user control, text baselines, the floors.
EVAL_RUNS = ("aligned", "shuffled_user", "text20", "text50", "floor")


def check(config) -> None:
  """Raises ConfigError (a ValueError) naming the config key, the bad value and the valid choices."""
  checks = [("stages", s, STAGES) for s in config.stages]
  if "data" in config:
    checks.append(("data.source", config.data.source, DATA_SOURCES))
  if "encoder" in config:
    checks += [("encoder.name", config.encoder.name, ENCODERS),
               ("encoder.input_variant", config.encoder.input_variant, INPUT_VARIANTS)]
  if "pretrain" in config:
    checks.append(("pretrain.loss", config.pretrain.loss, NIP_LOSSES))
  for key, value, valid in checks:
    if value not in valid:
      raise ConfigError(f"config {key}={value!r} is not a valid choice; expected one of {', '.join(valid)}")
  if "data" in config and config.data.source == "official" and not config.data.path:
    raise ConfigError("config data.source='official' needs data.path: the directory holding the "
                     "Kaggle files (pretrain_data_train.arrow, ...)")
