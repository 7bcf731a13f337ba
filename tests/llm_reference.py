"""Tiny random `transformers` checkpoints for parity tests (torch is a test-only dependency)."""

import numpy as np

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


def tiny_checkpoint(path, arch: str, tie: bool, seed: int = 0, **overrides):
  """Saves a random tiny Qwen2 or Llama model (perturbed away from its zero biases) to `path`."""
  import torch
  import transformers
  torch.manual_seed(seed)
  kw = {**TINY, "tie_word_embeddings": tie, "rope_theta": 10000.0, **overrides}
  if arch == "qwen2":
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
  else:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  model.eval()
  model.save_pretrained(path)
  return model


def torch_logits(model, ids, mask):
  import torch
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    return model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.numpy()
