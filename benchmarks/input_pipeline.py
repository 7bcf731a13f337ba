"""Throughput of the Stage 1 input pipeline at batch 256, length 512: in-process and with grain
worker processes (goal: >= 5,000 sequences/s on 2 cores; never the bottleneck).

  .venv/bin/python benchmarks/input_pipeline.py [--users 1200] [--batches 30] [--workers 0 1 2]

Builds a synthetic data set with long histories (most over 512 clicks, so every row is
truncated), then times, in the same run, each way of making the same batches after a warm-up
that also empties any read-ahead buffer:
  per-row reference   each row read and padded on its own (`ReadRow` + `RowToArrays`, then
                      `np.stack`): the path Stage 1 took before batches were read at once
  vectorised, N workers  `pipeline.make_dataset` with `input.workers=N`: each batch's rows read
                      column by column in one vectorised gather (`ReadBatch`); 0 = in this
                      process (grain reads ahead on 2 threads), N > 0 = N grain worker processes
Prints batches/s and sequences/s per row and, for scale, an estimate of the default
25M-parameter encoder's training step on this machine from its float32 matmul rate measured in
the same run (6 · 12·d²·layers FLOPs per token; d=512, 8 layers). Writes
benchmarks/results/input_pipeline.json.
"""

import argparse
import dataclasses
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


def timed(batches, warmup: int, n: int) -> float:
  """Batches/s of `n` batches after `warmup` (the read-ahead buffer drained by then)."""
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(n):
    next(batches)
  return n / (time.perf_counter() - start)


def per_row(path, cfg):
  """The reference: every row read and padded on its own, then stacked (endless, shuffled)."""
  source = pipeline.SequenceSource(path)
  read, arrays = pipeline.ReadRow(source), pipeline.RowToArrays(cfg, path)
  order = np.random.default_rng(0).permutation(len(source))
  at = 0
  while True:
    rows = [order[(at + i) % len(order)] for i in range(cfg.batch_size)]
    at += cfg.batch_size
    out = [arrays.map(read.map(r)) for r in rows]
    yield {k: np.stack([o[k] for o in out]) for k in out[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=int, default=1200)
  parser.add_argument("--batches", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=6)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--max-len", type=int, default=512)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    cfg = synthetic.SyntheticConfig(num_users=args.users, num_items=4000, median_len=700,
                                    min_len=400, max_len=1200)
    start = time.perf_counter()
    synthetic.build_dataset(tmp, cfg, tokenizer_lib.load_tokenizer(), "smollm2", log=lambda *_: None)
    build_s = time.perf_counter() - start
    path = os.path.join(tmp, "pretrain_data_train.arrow")
    pcfg = pipeline.InputConfig(batch_size=args.batch_size, max_len=args.max_len, num_epochs=None)
    batch = next(per_row(path, pcfg))
    rows.append(("per-row reference, in-process", timed(per_row(path, pcfg), 1, max(4, args.batches // 5))))
    for workers in args.workers:
      it = iter(pipeline.make_dataset(path, dataclasses.replace(pcfg, workers=workers), process_index=0,
                                      process_count=1))
      rows.append((f"vectorised, {'in-process' if not workers else f'{workers} worker process' + 'es' * (workers > 1)}",
                   timed(it, args.warmup, args.batches)))
      it.close()
  nbytes = sum(v.nbytes for v in batch.values())
  flops = matmul_flops_per_s()
  d, layers = 512, 8
  step_s = 6 * 12 * d * d * layers * args.batch_size * args.max_len / flops
  print(f"data set: {args.users} users built in {build_s:.1f}s; batch = {nbytes / 2**20:.1f} MiB; "
        f"{os.cpu_count()} cores")
  print(f"| pipeline (B={args.batch_size}, L={args.max_len}) | batches/s | sequences/s |")
  print("| --- | --- | --- |")
  for name, rate in rows:
    print(f"| {name} | {rate:.2f} | {rate * args.batch_size:,.0f} |")
  best = max(rate for _, rate in rows)
  print(f"float32 matmul rate (numpy, this machine): {flops / 1e9:.1f} GFLOP/s")
  print(f"estimated 25M-encoder train step at peak matmul rate: {step_s:.1f}s "
        f"({1 / step_s:.3f} steps/s); fastest pipeline/encoder ratio: {best * step_s:,.0f}x (goal >= 10x)")
  step_setup.write_result("input_pipeline", {**vars(args), "rows": {n: r * args.batch_size for n, r in rows},
                                             "numpy_matmul_gflops": flops / 1e9, "estimated_step_s": step_s})


if __name__ == "__main__":
  main()
