"""Training throughput of the five encoders at their configs/ sizes, item vocabulary reduced.

  .venv/bin/python benchmarks/encoders.py [--batch 8] [--length 512] [--items 20000] [--steps 3]
      [--encoders trmpp hstu ...]

For each encoder: one jitted SL training step (embedding + encoder + chunked full softmax over
`--items` items + AdamW) on random batches (with click times, so HSTU's time bias is on);
prints sequences/s, step time, parameter count and achieved matmul FLOP/s as a fraction of
this machine's float32 matmul rate, measured in the same run. FLOPs are counted on the step's
jaxpr with scan trip counts (`uqa_jax/runtime/flops.py`): XLA's cost analysis counts a loop body
once, which undercounts `nn.scan`-stacked layers and the GRU's time loop. The paper's batch is 256; on a 2-core CPU use a small
`--batch` (the per-sequence rate is what compares).
"""

import argparse
import importlib
import os
import sys
import time

import jax
import numpy as np

from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.runtime import flops as flops_lib

sys.path.insert(0, os.path.dirname(__file__))
import step_setup  # noqa: E402


def random_batch(rng, b, length, vocab, bag_sizes):
  batch = {schema.ITEM_COLUMN: rng.integers(1, vocab["item"], size=(b, length)).astype(np.int32)}
  for f in schema.FEATURES[1:]:
    batch[f.column] = rng.integers(0, vocab[f.table], size=(b, length, bag_sizes[f.column])).astype(np.int32)
  batch["timestamps"] = np.cumsum(rng.exponential(600.0, size=(b, length)), axis=1).astype(np.int32)
  batch["lengths"] = np.full((b,), length, np.int32)
  batch["valid"] = np.ones((b,), bool)
  return batch


def bench(name, args, rng):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.data.max_len = args.length
  info = {"vocab_sizes": {"item": args.items, "cate": 9_330, "brand": 20_000, "shop": 20_000,
                          "seller": 20_000, "bpe": 49_152}}
  batch = random_batch(rng, args.batch, args.length, info["vocab_sizes"], pipeline.DEFAULT_BAG_SIZES)
  step, state, batch, _, _ = step_setup.build_from_config(config, info, batch)

  flops = flops_lib.matmul_flops(step, state, batch)
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  state, metrics = compiled(state, batch)
  metrics["loss"].block_until_ready()
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch)
  metrics["loss"].block_until_ready()
  step_s = (time.perf_counter() - start) / args.steps
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return step_s, n_params, flops


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--items", type=int, default=20_000)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--encoders", nargs="+", default=["gru4rec", "sasrec", "mamba4rec", "hstu", "trmpp"])
  args = parser.parse_args()
  rate = step_setup.matmul_rate()
  rng = np.random.default_rng(0)
  print(f"batch {args.batch}, length {args.length}, {args.items:,} items; float32 matmul rate "
        f"{rate / 1e9:.1f} GFLOP/s on {jax.devices()[0].platform}")
  print("| encoder | parameters | step s | sequences/s | matmul GFLOP/step | achieved / matmul peak |")
  print("| --- | --- | --- | --- | --- | --- |")
  rows = []
  for name in args.encoders:
    step_s, n_params, flops = bench(name, args, rng)
    rows.append({"encoder": name, "parameters": n_params, "step_s": step_s, "matmul_gflop": flops / 1e9,
                 "of_peak": flops / step_s / rate})
    print(f"| {name} | {n_params / 1e6:.1f}M | {step_s:.2f} | {args.batch / step_s:.1f} | "
          f"{flops / 1e9:.1f} | {flops / step_s / rate:.0%} |", flush=True)
  step_setup.write_result("encoders", {**vars(args), "matmul_gflops": rate / 1e9, "rows": rows})


if __name__ == "__main__":
  main()
