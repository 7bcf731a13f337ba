"""The stage recipes: the `pretrain`, `align`, `evaluate`, `diagnose` and `report` config blocks.

Each is a frozen dataclass whose defaults are the one place the recipe's defaults live (the
paper's or the official code's, as each says); `BLOCK` names its config block and
`blocks.read(config, Cls)` builds it from a run's config, refusing unknown keys and bad values
by name. The model packages hold their own blocks (`encoder`, `adapter`, `llm`, `data`, `input`).
Fields marked `RUN_ONLY` change how a run reports, not what it computes (not fingerprinted).
"""

import dataclasses
from typing import ClassVar

from uqa_jax.config import blocks
from uqa_jax.config import choices
from uqa_jax.config.blocks import RUN_ONLY
from uqa_jax.runtime import planner

SCHEDULES = ("constant", "warmup_cosine")  # align.schedule
TEXT_LLMS = ("base", "aligned")  # evaluate.text_llm


@dataclasses.dataclass(frozen=True)
class TrainingLoop:
  """What both training blocks (`pretrain`, `align`) hold besides their recipe: the run's length
  and its cadence (`stages/train_loop.py` reads these). Each block sets its own defaults."""
  LIMITS: ClassVar[dict] = {"batch_size": ">= 1", "epochs": ">= 1", "steps": ">= 0", "log_every": ">= 1",
                            "eval_every": ">= 0", "checkpoint_every": ">= 1", "max_to_keep": ">= 1"}
  batch_size: int = 32
  epochs: int = 1  # used when steps is 0
  steps: int = 0  # 0: epochs x rows // batch_size
  log_every: int = dataclasses.field(default=10, metadata=RUN_ONLY)
  eval_every: int = dataclasses.field(default=0, metadata=RUN_ONLY)  # 0: at the end only
  checkpoint_every: int = dataclasses.field(default=100, metadata=RUN_ONLY)
  max_to_keep: int = dataclasses.field(default=2, metadata=RUN_ONLY)  # checkpoints kept while running
  # What a finished stage keeps of its checkpoints (choices.KEEP_CHECKPOINTS): none (nothing resumes
  # a finished stage; later stages read its export), last, or all; the bytes freed are logged.
  keep_checkpoints: str = dataclasses.field(default="none", metadata=RUN_ONLY)
  # Memory one device may use, e.g. "80GiB" (empty: what the device reports; CPU: available host
  # memory per CPU device). The step is planned against it before anything is allocated, and
  # before the LLM's weights are read (`uqa_jax.runtime.planner`).
  device_memory: str = dataclasses.field(default="", metadata=RUN_ONLY)

  def __post_init__(self):
    planner.parse_memory(self.device_memory)  # a malformed size fails when the config is read
    if self.keep_checkpoints not in choices.KEEP_CHECKPOINTS:
      raise ValueError(f"keep_checkpoints={self.keep_checkpoints!r}; expected one of "
                       f"{', '.join(choices.KEEP_CHECKPOINTS)}")

  def total_steps(self, rows: int) -> int:
    """The run's length: `steps`, or `epochs` passes over `rows` training rows in whole batches."""
    return self.steps or self.epochs * max(1, rows // self.batch_size)


@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainingLoop):
  """The `pretrain` block; defaults are the paper's Stage 1 recipe (§4.1.3)."""
  BLOCK: ClassVar[str] = "pretrain"
  LIMITS: ClassVar[dict] = {**TrainingLoop.LIMITS, "learning_rate": "> 0", "warmup_steps": ">= 0",
                            "betas": "in [0, 1)", "weight_decay": ">= 0", "grad_clip": "> 0", "sl_chunk": ">= 0",
                            "cl_negatives": ">= 1", "cl_temperature": "> 0"}
  loss: str = "sl"  # sl (softmax over all items) | cl (InfoNCE)
  batch_size: int = 256
  epochs: int = 10  # used when steps is 0
  learning_rate: float = 1e-4  # peak of warm-up + cosine decay to a tenth
  warmup_steps: int = 100
  betas: tuple[float, float] = (0.9, 0.999)
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  embed_dims: dict = dataclasses.field(default_factory=dict)  # table -> width; absent: official widths
  # Chunk of every streamed softmax: items for `sl` and eval ranking, in-batch positions for `cl`
  # (0: per platform, `nip_loss.default_chunk`: cache-sized logit blocks on CPU, 8192 elsewhere).
  sl_chunk: int = 0
  cl_negatives: int = 256
  cl_temperature: float = 0.07
  log_every: int = dataclasses.field(default=50, metadata=RUN_ONLY)
  checkpoint_every: int = dataclasses.field(default=500, metadata=RUN_ONLY)


@dataclasses.dataclass(frozen=True)
class AlignConfig(TrainingLoop):
  """The `align` block; defaults are the official recipe (adapter-only, AdamW 1e-4, 3 epochs)."""
  BLOCK: ClassVar[str] = "align"
  LIMITS: ClassVar[dict] = {**TrainingLoop.LIMITS, "learning_rate": "> 0", "llm_learning_rate": ">= 0",
                            "llm_frozen_steps": ">= 0", "llm_steps": ">= 0", "warmup_steps": ">= 0", "betas": "in [0, 1)",
                            "weight_decay": ">= 0", "grad_clip": "> 0", "title_fit_rows": ">= 1",
                            "max_bad_steps": ">= 1", "reconstruct_steps": ">= 0", "reconstruct_every": ">= 0",
                            "reconstruct_clicks": ">= 1", "reconstruct_learning_rate": "> 0",
                            "contrast_weight": ">= 0"}
  mode: str = "adapter"  # choices.ALIGN_MODES: adapter | full
  user: str = "encoder"  # choices.ALIGN_USERS: encoder | zeros | random_encoder | oracle_titles | text20 | text50
  place: str = "prefix"  # choices.SPLICE_PLACES: prefix | placeholder (before the question)
  # choices.ADAPTER_INITS: random | titles (`adapters/title_fit.py`: the token map starts as the
  # ridge fit of each click's mean title embedding on its encoder state)
  adapter_init: str = dataclasses.field(default="random", metadata=blocks.added_later("random"))
  title_fit_rows: int = dataclasses.field(default=512, metadata=blocks.added_later(512))  # align-train rows it fits on
  system_prompt: str = ""  # "": no system turn at all
  epochs: int = 3  # used when steps is 0
  learning_rate: float = 1e-4  # adapter (and encoder, when it trains)
  llm_learning_rate: float = 1e-6  # mode full only (official: 1e-6 for every non-adapter parameter)
  llm_frozen_steps: int = 0  # mode full: the LLM's rate is 0 for this many first steps (the adapter, and a training encoder, start at once)
  # mode full: the LLM trains for this many steps (after llm_frozen_steps; its schedule spans
  # them), then its rate is 0 and the adapter goes on alone: the official recipe's frozen LLM after
  # a short phase that teaches the answer format (0: the LLM trains to the end)
  llm_steps: int = dataclasses.field(default=0, metadata=blocks.added_later(0))
  train_encoder: bool = False
  # A workdir whose Stage 2 fine-tuned the LLM (e.g. a text20 run): this run's LLM starts from that
  # export's LLM instead of `llm.model`'s weights (which it must have been made from, on this run's
  # data: the same data fingerprint, else it may have trained on this run's eval questions); with mode
  # 'adapter' the official recipe on an LLM that already answers in the format, from the titles
  # as text. "": `llm.model` as it is.
  llm_from: str = dataclasses.field(default="", metadata=blocks.added_later(""))
  # Reconstruction pre-alignment (`data/reconstruct.py`): the run's first `reconstruct_steps` steps
  # train on reconstruction rows (a prefix of an align-train user's history -> its last
  # `reconstruct_clicks` clicks' texts, of `reconstruct_fields`) with the LLM frozen and the adapter
  # (and a training encoder) at `reconstruct_learning_rate`, constant; the QA steps (`steps` or
  # `epochs`) follow, and with `reconstruct_every` = n every n-th of them is a reconstruction batch
  # (mixed in: the LLM of a full fine-tune then learns from it too; they replace QA batches, so
  # `epochs` passes then see fewer questions). 0 and 0: no reconstruction.
  reconstruct_steps: int = dataclasses.field(default=0, metadata=blocks.added_later(0))
  reconstruct_every: int = dataclasses.field(default=0, metadata=blocks.added_later(0))
  reconstruct_clicks: int = 3
  reconstruct_fields: tuple[str, ...] = ("title",)  # choices.RECONSTRUCT_FIELDS: title | category | brand
  reconstruct_learning_rate: float = 1e-3  # LLaVA's projector-only stage: 1e-3
  # > 0: every training batch's loss adds this weight times the logistic loss of ranking the own
  # user above the batch's previous row's on the same answer (`soft_prompt/contrast.py`; a second
  # forward and backward pass per step). 0: the answer loss alone.
  contrast_weight: float = dataclasses.field(default=0.0, metadata=blocks.added_later(0.0))
  schedule: str = "constant"  # constant (official) | warmup_cosine (warm-up, cosine to a tenth)
  warmup_steps: int = 100  # schedule warmup_cosine only
  betas: tuple[float, float] = (0.9, 0.98)
  weight_decay: float = 0.0
  grad_clip: float = 1.5
  max_bad_steps: int = dataclasses.field(default=10, metadata=RUN_ONLY)

  def __post_init__(self):
    super().__post_init__()
    for key, valid in (("mode", choices.ALIGN_MODES), ("user", choices.ALIGN_USERS),
                       ("place", choices.SPLICE_PLACES), ("schedule", SCHEDULES), ("adapter_init", choices.ADAPTER_INITS)):
      if getattr(self, key) not in valid:
        raise ValueError(f"{key}={getattr(self, key)!r} is not a valid choice; expected one of {', '.join(valid)}")
    if self.train_encoder and self.mode != "full":
      raise ValueError("train_encoder=True needs mode='full' (mode 'adapter' trains the adapter only)")
    if self.train_encoder and self.user in ("zeros", choices.ORACLE, *choices.TEXT_CLICKS):
      raise ValueError(f"train_encoder=True with user={self.user!r}: the {self.user} control never reads the encoder")
    if self.user in choices.TEXT_CLICKS and self.mode != "full":
      raise ValueError(f"user={self.user!r} puts the history into the prompt as text and has no soft tokens: "
                       "only the LLM can learn, so it needs mode='full'")
    for key in ("llm_frozen_steps", "llm_steps"):
      if getattr(self, key) and self.mode != "full":
        raise ValueError(f"{key}={getattr(self, key)} needs mode='full' (mode 'adapter' never trains the LLM)")
    if self.llm_steps and self.schedule == "warmup_cosine" and self.warmup_steps >= self.llm_steps:
      raise ValueError(f"llm_steps={self.llm_steps} with warmup_steps={self.warmup_steps}: the LLM's warm-up "
                       "would take all of its steps")
    if self.reconstruct_every == 1:
      raise ValueError("reconstruct_every=1 would make every QA step a reconstruction step; use 0 (none) or >= 2")
    if self.reconstructs() and self.user in choices.TEXT_CLICKS:
      raise ValueError(f"reconstruct_steps / reconstruct_every with user={self.user!r}: the history is in the "
                       "prompt as text; there are no soft tokens to reconstruct it from")
    if self.contrast_weight and self.user in choices.TEXT_CLICKS:
      raise ValueError(f"contrast_weight={self.contrast_weight:g} with user={self.user!r}: the history is in the "
                       "prompt as text, which the rolled batch does not change; there is nothing to contrast")
    unknown = [f for f in self.reconstruct_fields if f not in choices.RECONSTRUCT_FIELDS]
    if unknown or not self.reconstruct_fields or len(set(self.reconstruct_fields)) != len(self.reconstruct_fields):
      raise ValueError(f"reconstruct_fields={tuple(self.reconstruct_fields)}: list each field once, from "
                       f"{', '.join(choices.RECONSTRUCT_FIELDS)}")
    if self.adapter_init == "titles" and self.user in (choices.ORACLE, *choices.TEXT_CLICKS):
      raise ValueError(f"adapter_init='titles' with user={self.user!r}: it fits the map from encoder states; the "
                       f"{self.user} run has none (the oracle's map starts as the identity)")

  def reconstructs(self) -> bool:
    """Whether the run trains on reconstruction rows at all."""
    return bool(self.reconstruct_steps or self.reconstruct_every)

  def total_steps(self, rows: int) -> int:
    """The reconstruction steps, then the QA steps: `steps`, or `epochs` passes over `rows` rows."""
    return self.reconstruct_steps + super().total_steps(rows)

  def trainable(self) -> tuple[str, ...]:
    """The parameter groups the update touches."""
    return ("adapter",) + (("llm",) if self.mode == "full" else ()) + (("encoder",) if self.train_encoder else ())


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
  BLOCK: ClassVar[str] = "evaluate"
  LIMITS: ClassVar[dict] = {"max_new_tokens": ">= 1", "temperature": ">= 0", "top_p": "in (0, 1]",
                            "batch_size": ">= 1", "prompt_buckets": ">= 1", "candidates": ">= 2",
                            "max_questions": ">= 0", "bootstrap_samples": ">= 1", "log_every": ">= 1"}
  runs: tuple[str, ...] = ("aligned", "shuffled_user", "floor")  # choices.EVAL_RUNS
  max_new_tokens: int = 32
  temperature: float = 0.0  # 0: greedy (the default); > 0 samples, seeded by config.seed
  top_p: float = 1.0  # nucleus filtering when sampling
  batch_size: int = 16
  # Prompts padded to at most this many length buckets, fitted to the prompts the runs ask (the
  # least padding): one prefill executable per bucket. Padding changes no answer in float32 (masked).
  prompt_buckets: int = dataclasses.field(default=2, metadata=RUN_ONLY)
  ranked: bool = True  # also score the listed candidates (IP, AP) by likelihood
  answer_nll: bool = True  # also score the gold answer's NLL per token (every question)
  # ranked_all: every question ranks `candidates` answers by likelihood: its gold and distractors
  # drawn by frequency from other users' golds of its template (evaluation/candidates.py)
  ranked_all: bool = dataclasses.field(default=True, metadata=blocks.added_later(False))
  candidates: int = dataclasses.field(default=10, metadata=blocks.added_later(10))
  text_llm: str = "base"  # text20/text50: base (zero-shot, as the paper) | aligned
  max_questions: int = 0  # 0: every align-eval question
  prompt_cost: bool = True  # Table 7: time the prefill of the soft prompt and of text20/text50
  bootstrap_samples: int = 1000
  log_every: int = dataclasses.field(default=5, metadata=RUN_ONLY)  # batches

  def __post_init__(self):
    unknown = [r for r in self.runs if r not in choices.EVAL_RUNS]
    if unknown or not self.runs or len(set(self.runs)) != len(self.runs):
      raise ValueError(f"runs={tuple(self.runs)}: list each run once, from {', '.join(choices.EVAL_RUNS)}")
    if self.text_llm not in TEXT_LLMS:
      raise ValueError(f"text_llm={self.text_llm!r}; expected one of {', '.join(TEXT_LLMS)}")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  LIMITS: ClassVar[dict] = {"min_train": ">= 1", "l2": ">= 0", "steps": ">= 1", "learning_rate": "> 0"}
  min_train: int = 20  # train questions a stem needs to be probed
  l2: float = 1e-3  # on standardised features
  steps: int = 300
  learning_rate: float = 0.05
  seed: int = 0  # the label shuffle of the control


@dataclasses.dataclass(frozen=True)
class DiagnoseConfig:
  BLOCK: ClassVar[str] = "diagnose"
  LIMITS: ClassVar[dict] = {"batch_size": ">= 1", "bootstrap_samples": ">= 1"}
  probe: ProbeConfig = ProbeConfig()
  batch_size: int = dataclasses.field(default=32, metadata=RUN_ONLY)  # histories per encoder call
  bootstrap_samples: int = 1000


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  BLOCK: ClassVar[str] = "report"
  include: tuple[str, ...] = ()  # other workdirs whose evaluate results join the tables
  figures: bool = True
