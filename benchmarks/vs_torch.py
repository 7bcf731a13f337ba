"""Trm++ and SASRec training steps, ours (JAX) next to PyTorch eager and torch.compile, one run.

  .venv/bin/python benchmarks/vs_torch.py [--encoders trmpp sasrec] [--steps 5] [--batch 8]
      [--length 512] [--layers 4] [--no_compile]

The benchmarked shapes (`benchmarks/step_setup.py`): 4 layers, d 512, 4 heads, batch 8 x 512,
item ids only with a 100,000 x 128 table, full-softmax NIP loss, AdamW, dropout 0.1. Ours is
Stage 1's own `train_step`; PyTorch's is `benchmarks/torch_encoders.py` (the same model; how
each side computes the loss and attention is said there). Every figure comes from this one
invocation on this machine: the float32 matmul rate JAX and PyTorch reach at 2048³, then per
encoder the median step time over `--steps` timed steps after warm-up (compilation). FLOPs are
matmul FLOPs counted on our step's jaxpr (`uqa_jax/runtime/flops.py`; the loss's recomputed chunk
logits included); "of peak" is achieved FLOP/s over JAX's measured matmul rate. Writes
`benchmarks/results/vs_torch.json`.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
import torch

from uqa_jax.runtime import flops as flops_lib

sys.path.insert(0, os.path.dirname(__file__))
import step_setup  # noqa: E402
import torch_encoders  # noqa: E402


def ours(encoder, shapes, steps):
  step, state, batch, _, _ = step_setup.build(encoder, shapes)
  flops = flops_lib.matmul_flops(step, state, batch)
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    metrics["loss"].block_until_ready()

  run()
  n_params = sum(x.size for x in jax.tree.leaves(holder["state"].params))
  return step_setup.median_time(run, steps), flops, n_params


def theirs(encoder, shapes, steps, compile_mode):
  torch.manual_seed(0)
  model = torch_encoders.UserModel(encoder, shapes.layers, shapes.d_model, shapes.heads, shapes.items,
                                   shapes.item_dim, shapes.length, shapes.dropout)
  step = torch_encoders.make_step(model, shapes.items, compile_mode)
  b = step_setup.batch(shapes)
  ids = torch.from_numpy(b["uni_seq_item_id"].astype(np.int64))
  lengths = torch.from_numpy(b["lengths"].astype(np.int64))
  start = time.perf_counter()
  step(ids, lengths)  # warm-up (torch.compile compiles here)
  warm = time.perf_counter() - start
  return step_setup.median_time(lambda: step(ids, lengths), steps), warm, sum(p.numel() for p in model.parameters())


def torch_matmul_rate(n=2048, repeats=5):
  a = torch.randn(n, n)
  a @ a
  return 2 * n ** 3 / min(step_setup.median_time(lambda: a @ a, 1) for _ in range(repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoders", nargs="+", default=["trmpp", "sasrec"])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--no_compile", action="store_true", help="skip torch.compile (minutes of compilation)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "vs_torch.json"))
  args = parser.parse_args()
  shapes = step_setup.Shapes(layers=args.layers, batch=args.batch, length=args.length)
  rate = step_setup.matmul_rate()
  # Ours first, before torch starts its OpenMP threads: their spin-waiting would steal the
  # cores XLA uses on a 2-core machine (benchmarks/llm.py measures the same way).
  mine = {encoder: ours(encoder, shapes, args.steps) for encoder in args.encoders}
  torch.set_num_threads(os.cpu_count())
  rows = []
  for encoder in args.encoders:
    step_s, flops, n_params = mine[encoder]
    eager_s, _, t_params = theirs(encoder, shapes, args.steps, None)
    compiled_s, compile_s = (theirs(encoder, shapes, args.steps, "default")[:2] if not args.no_compile
                             else (float("nan"), float("nan")))
    rows.append({"encoder": encoder, "parameters": n_params, "torch_parameters": t_params, "ours_s": step_s,
                 "torch_eager_s": eager_s, "torch_compile_s": compiled_s, "torch_compile_warmup_s": compile_s,
                 "matmul_gflop": flops / 1e9, "of_peak": flops / step_s / rate})
  t_rate = torch_matmul_rate()
  print(f"{shapes}\nfloat32 matmul at 2048³: JAX {rate / 1e9:.0f} GFLOP/s, PyTorch {t_rate / 1e9:.0f} GFLOP/s "
        f"({os.cpu_count()} threads, {jax.devices()[0].platform})")
  print("| encoder | parameters (ours / torch) | ours s | torch eager s | torch.compile s | vs eager | "
        "vs compile | GFLOP (jaxpr) | ours of JAX matmul peak |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['encoder']} | {r['parameters']:,} / {r['torch_parameters']:,} | {r['ours_s']:.2f} | "
          f"{r['torch_eager_s']:.2f} | {r['torch_compile_s']:.2f} | {r['torch_eager_s'] / r['ours_s']:.2f}x | "
          f"{r['torch_compile_s'] / r['ours_s']:.2f}x | {r['matmul_gflop']:.0f} | {r['of_peak']:.0%} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"shapes": vars(shapes), "jax_matmul_gflops": rate / 1e9, "torch_matmul_gflops": t_rate / 1e9,
               "steps": args.steps, "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
