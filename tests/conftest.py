"""Shared fixtures: the real tokenizer and small data sets built once per session."""

import jax
import pytest

from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib

# Tests compare against float64/NumPy references at 1e-5: on GPUs JAX's default float32 matmul is
# TF32 (benchmarks/gpu_check.sh: 12 reference tests fail on an H200 at the default, 1 at
# "highest"). CPUs always compute float32 in full, so this changes nothing there.
jax.config.update("jax_default_matmul_precision", "highest")

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
