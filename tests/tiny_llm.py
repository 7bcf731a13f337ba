"""A tiny random LLM directory with SmolLM2's tokenizer: Stage 2 runs in seconds in tests."""

import flax.linen as nn
import jax

from uqa_jax.llm import model as llm_model
from uqa_jax.llm import weights
from uqa_jax.llm.config import LLMConfig


def make_dir(path: str, tokenizer, seed: int = 0) -> str:
  """Writes config.json, model.safetensors and the tokenizer files to `path`; returns it."""
  cfg = LLMConfig(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, rope_theta=10000.0, rms_eps=1e-5, qkv_bias=True, tie_embeddings=True,
                  eos_token_ids=(tokenizer.eos_token_id,))
  params = llm_model.init_params(cfg, jax.random.PRNGKey(seed))
  weights.save_hf(path, cfg, jax.device_get(nn.unbox(params)))
  tokenizer.save_pretrained(path)
  return path
