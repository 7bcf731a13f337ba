"""Shared fixtures: the real tokenizer and small data sets built once per session."""

import os

import jax
import pytest

from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib

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
