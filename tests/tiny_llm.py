"""A tiny random LLM directory with SmolLM2's tokenizer: Stage 2 runs in seconds in tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.llm import model as llm_model
from uqa_jax.llm import weights
from uqa_jax.llm.config import LLMConfig


def make_dir(path: str, tokenizer, seed: int = 0) -> str:
  """Writes config.json, model.safetensors and the tokenizer files to `path`; returns it."""
  cfg = LLMConfig(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, rope_theta=10000.0, rms_eps=1e-5, qkv_bias=True, tie_embeddings=True,
                  eos_token_ids=(tokenizer.eos_token_id,))
  ids = jnp.zeros((1, 2), jnp.int32)
  params = llm_model.Decoder(cfg).init(jax.random.PRNGKey(seed), ids, positions=ids,
                                       kv_mask=jnp.ones((1, 2), jnp.int32))["params"]
  weights.save_hf(path, cfg, jax.device_get(nn.unbox(params)))
  tokenizer.save_pretrained(path)
  return path
