"""Decoder hyper-parameters for the Qwen2 family and Llama-family checkpoints.

Built from a Hugging Face `config.json`, from GGUF metadata, or from a preset.
"""

import dataclasses
import json
import os

SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  vocab_size: int  # V
  d_model: int  # D
  d_ff: int  # F (SwiGLU inner width)
  num_layers: int
  num_heads: int  # H
  num_kv_heads: int  # K (grouped-query attention: H % K == 0)
  head_dim: int
  rope_theta: float
  rms_eps: float
  qkv_bias: bool  # Qwen2: True; Llama: False
  tie_embeddings: bool
  max_position: int = 32768
  arch: str = "qwen2"
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  remat: bool = False  # recompute each layer in the backward pass (not from a checkpoint: llm.remat)

  def replace(self, **kw) -> "LLMConfig":
    return dataclasses.replace(self, **kw)


def _eos(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def from_hf_dict(hf: dict, where: str = "config.json") -> LLMConfig:
  archs = hf.get("architectures") or []
  arch = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
  if arch is None:
    arch = {"qwen2": "qwen2", "llama": "llama"}.get(hf.get("model_type"))
  if arch is None:
    raise ValueError(f"{where}: unsupported architecture {archs or hf.get('model_type')!r}; "
                     f"supported: {sorted(SUPPORTED_ARCHITECTURES)}")
  if hf.get("rope_scaling"):
    raise ValueError(f"{where}: key 'rope_scaling' = {hf['rope_scaling']}: RoPE scaling is not "
                     f"implemented; this model would run with wrong positions")
  if (hf.get("rope_parameters") or {}).get("rope_type", "default") != "default":
    raise ValueError(f"{where}: key 'rope_parameters' = {hf['rope_parameters']}: RoPE scaling is not "
                     f"implemented; this model would run with wrong positions")
  if arch == "qwen2" and hf.get("use_sliding_window"):
    raise ValueError(f"{where}: key 'use_sliding_window' = true: sliding-window attention is not "
                     f"implemented")
  if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
    raise ValueError(f"{where}: key 'partial_rotary_factor' = {hf['partial_rotary_factor']}: partial "
                     f"rotary embeddings are not implemented")
  theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
  heads = hf["num_attention_heads"]
  return LLMConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], d_ff=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"], num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(theta), rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position=hf.get("max_position_embeddings", 32768), arch=arch,
      bos_token_id=hf.get("bos_token_id"), eos_token_ids=_eos(hf.get("eos_token_id")),
  )


def from_hf_dir(path: str) -> LLMConfig:
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory)")
  with open(file, encoding="utf-8") as f:
    return from_hf_dict(json.load(f), file)


def to_hf_dict(cfg: LLMConfig) -> dict:
  """A config.json `transformers` reads back into the same model."""
  common = {
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "rope_theta": cfg.rope_theta,
      "rms_norm_eps": cfg.rms_eps, "tie_word_embeddings": cfg.tie_embeddings,
      "max_position_embeddings": cfg.max_position, "hidden_act": "silu", "torch_dtype": "float32",
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else
                      (cfg.eos_token_ids[0] if cfg.eos_token_ids else None),
  }
  if cfg.arch == "qwen2":
    return {**common, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "use_sliding_window": False}
  return {**common, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
          "head_dim": cfg.head_dim, "attention_bias": cfg.qkv_bias, "mlp_bias": False}


def _qwen25(vocab, d, ff, layers, heads, kv, tie):
  return LLMConfig(vocab_size=vocab, d_model=d, d_ff=ff, num_layers=layers, num_heads=heads,
                   num_kv_heads=kv, head_dim=d // heads, rope_theta=1_000_000.0, rms_eps=1e-6,
                   qkv_bias=True, tie_embeddings=tie, arch="qwen2", eos_token_ids=(151645, 151643))


# Released Qwen2.5 instruct sizes (their config.json values).
PRESETS = {
    "qwen2.5-0.5b": _qwen25(151_936, 896, 4864, 24, 14, 2, True),
    "qwen2.5-1.5b": _qwen25(151_936, 1536, 8960, 28, 12, 2, True),
    "qwen2.5-3b": _qwen25(151_936, 2048, 11008, 36, 16, 2, True),
    "qwen2.5-7b": _qwen25(152_064, 3584, 18944, 28, 28, 4, False),
}
