"""Throughput of the pretrain input pipeline at batch 256, length 512 (goal: never the bottleneck).

  .venv/bin/python benchmarks/input_pipeline.py [--users 1200] [--batches 20]

Builds a synthetic data set with long histories (most over 512 clicks, so every row is
truncated), then times `pipeline.make_dataset` end to end: grain shuffling, Arrow reads,
bag padding, batching. Prints batches/s and sequences/s, and, for scale, an estimate of the
default 25M-parameter encoder's training step on this machine from its float32 matmul rate
measured in the same run (6 · 12·d²·layers FLOPs per token; d=512, 8 layers). The encoders
benchmark (benchmarks/encoders.py, Stage 1) replaces the estimate with a measurement.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from uqa_jax.data import pipeline
from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib

sys.path.insert(0, os.path.dirname(__file__))
import step_setup  # noqa: E402


def matmul_flops_per_s(n=2048, repeats=5):
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  a @ a
  start = time.perf_counter()
  for _ in range(repeats):
    a @ a
  return 2 * n**3 * repeats / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=int, default=1200)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--max-len", type=int, default=512)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    cfg = synthetic.SyntheticConfig(num_users=args.users, num_items=4000, median_len=700,
                                    min_len=400, max_len=1200)
    start = time.perf_counter()
    synthetic.build_dataset(tmp, cfg, tokenizer_lib.load_tokenizer(), "smollm2", log=lambda *_: None)
    build_s = time.perf_counter() - start
    pcfg = pipeline.InputConfig(batch_size=args.batch_size, max_len=args.max_len, num_epochs=None)
    it = iter(pipeline.make_dataset(os.path.join(tmp, "pretrain_data_train.arrow"), pcfg,
                                    process_index=0, process_count=1))
    next(it)  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
    elapsed = time.perf_counter() - start
  nbytes = sum(v.nbytes for v in batch.values())
  batches_s = args.batches / elapsed
  flops = matmul_flops_per_s()
  d, layers = 512, 8
  step_s = 6 * 12 * d * d * layers * args.batch_size * args.max_len / flops
  print(f"data set: {args.users} users built in {build_s:.1f}s; batch = {nbytes / 2**20:.1f} MiB")
  print(f"| pipeline (B={args.batch_size}, L={args.max_len}) | batches/s | sequences/s |")
  print("| --- | --- | --- |")
  print(f"| in-process, 1 thread | {batches_s:.2f} | {batches_s * args.batch_size:,.0f} |")
  print(f"float32 matmul rate (numpy, this machine): {flops / 1e9:.1f} GFLOP/s")
  print(f"estimated 25M-encoder train step at peak matmul rate: {step_s:.1f}s "
        f"({1 / step_s:.3f} steps/s); pipeline/encoder ratio: {batches_s * step_s:,.0f}x (goal >= 10x)")
  step_setup.write_result("input_pipeline", {**vars(args), "batches_per_s": batches_s, "numpy_matmul_gflops": flops / 1e9,
                                             "estimated_step_s": step_s, "ratio": batches_s * step_s})


if __name__ == "__main__":
  main()
