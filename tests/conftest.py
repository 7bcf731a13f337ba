"""Shared fixtures: the real tokenizer and small data sets built once per session."""

import os

import jax
import pytest

from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository (tests run subprocesses from it)

# Tests compare against float64/NumPy references at 1e-5: on GPUs JAX's default float32 matmul is
# TF32 (benchmarks/gpu_check.sh: 12 reference tests fail on an H200 at the default, 1 at
# "highest"). CPUs always compute float32 in full, so this changes nothing there.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One XLA compilation cache per test session, shared with the subprocesses tests start: the
  many stage runs compile the same programs, and a fresh directory keeps sessions independent."""
  path = str(tmp_path_factory.mktemp("xla-cache"))
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  yield

SMALL = synthetic.SyntheticConfig(num_users=80, num_items=400, num_categories=12, num_brands=40,
                                  num_shops=50, num_sellers=40, median_len=40, max_len=200)


@pytest.fixture(scope="session")
def tokenizer():
  return tokenizer_lib.load_tokenizer("smollm2")


@pytest.fixture(scope="session", params=["en", "zh"])
def synthetic_dir(request, tmp_path_factory, tokenizer):
  out = tmp_path_factory.mktemp(f"synthetic-{request.param}")
  cfg = synthetic.SyntheticConfig(**{**SMALL.__dict__, "language": request.param})
  synthetic.build_dataset(str(out), cfg, tokenizer, "smollm2", log=lambda *_: None)
  return str(out)


@pytest.fixture(scope="session")
def en_dir(tmp_path_factory, tokenizer):
  out = tmp_path_factory.mktemp("synthetic-en-only")
  synthetic.build_dataset(str(out), SMALL, tokenizer, "smollm2", log=lambda *_: None)
  return str(out)


def tiny_llm_config(llm_dir: str):
  """configs/smoke.py on a tiny LLM directory, with Stage 2's chats cut at 96 tokens."""
  from configs import smoke
  config = smoke.get_config()
  config.llm.model = llm_dir
  config.input.max_text_len = 96
  config.pretrain.steps = 3  # any trained encoder will do
  return config


@pytest.fixture(scope="session")
def tiny_llm_base(tmp_path_factory, tokenizer):
  """(tiny random LLM directory, workdir with finished data and pretrain stages) for Stages 2-3 tests;
  copy the stage directories into a test's own workdir (`tiny_llm_config` gives the same fingerprints)."""
  from tests import tiny_llm
  from uqa_jax import stages
  llm_dir = tiny_llm.make_dir(str(tmp_path_factory.mktemp("tiny-llm")), tokenizer)
  workdir = str(tmp_path_factory.mktemp("tiny-llm-base"))
  config = tiny_llm_config(llm_dir)
  for stage in ("data", "pretrain"):
    stages.run(stage, config, workdir, log=lambda *_: None)
  return llm_dir, workdir
