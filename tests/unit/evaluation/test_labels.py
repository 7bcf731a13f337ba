"""A run's label names what its alignment adds to the default recipe, so a report that includes
several runs of one encoder (trained, + contrast, + reconstruction) tells them apart."""

from configs import default
from uqa_jax.evaluation import evaluator


def _label(run="aligned", **align):
  c = default.get_config()
  for k, v in align.items():
    setattr(c.align, k, v)
  return evaluator.describe(c, run)["label"]


def test_labels_name_the_recipe_of_aligned_runs_only():
  assert _label() == "trmpp"
  assert _label(contrast_weight=1.0) == "trmpp + contrast"
  assert _label(reconstruct_steps=20) == "trmpp + reconstruction"
  assert _label(reconstruct_steps=20, user="zeros") == "zeros + reconstruction"
  assert _label(llm_steps=64, contrast_weight=0.5) == "trmpp + contrast, LLM frozen after 64 steps"
  assert _label("shuffled_user", contrast_weight=1.0) == "shuffled_user"  # the report names it after its model
  assert _label(user="oracle_titles") == "oracle reader (titles' LLM embeddings)"
