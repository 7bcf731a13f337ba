"""Mamba4Rec's selective scan: associative (log-depth) vs sequential (`lax.scan`), by length.

  .venv/bin/python benchmarks/scan.py [--lengths 64 128 256 512 1024 2048] [--batch 2]
      [--inner 1024] [--state 16] [--repeats 3] [--profile 1024]

h_t = a_t h_{t-1} + b_t on [B, L, I, N] float32 (I = expand · d_model = 2 · 512, N = 16: the
paper-size Mamba4Rec layer), forward alone and forward + backward (the gradient of a random
projection of h with respect to a and b). `mamba4rec.selective_scan` (associative, with its
hand-written backward scan) next to `mamba4rec.sequential_scan` (autodiff through lax.scan).
Best of `--repeats` after a compile; both checked equal first. `--profile L` then traces one
forward+backward of each at length L (`jax.profiler`, as benchmarks/profile_step.py) and prints
its largest ops: where the associative scan's extra time goes. Writes
`benchmarks/results/scan.json`.
"""

import argparse
import json
import os

import sys

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.encoders import mamba4rec

sys.path.insert(0, os.path.dirname(__file__))
import profile_step  # noqa: E402
from timing import best_time  # noqa: E402

IMPLS = {"associative": mamba4rec.selective_scan, "sequential": mamba4rec.sequential_scan}


def inputs(batch, length, inner, state):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(length), 3)
  shape = (batch, length, inner, state)
  a = jax.random.uniform(k1, shape, minval=0.5, maxval=1.0)  # exp(Δ A): decays in (0, 1)
  return a, 0.1 * jax.random.normal(k2, shape), jax.random.normal(k3, shape)


def fwd_bwd(fn, w):
  return jax.jit(jax.grad(lambda a, b: jnp.sum(fn(a, b) * w), argnums=(0, 1)))


def profile(args, length, top=6):
  a, b, w = inputs(args.batch, length, args.inner, args.state)
  out = {}
  for name, fn in IMPLS.items():
    compiled = fwd_bwd(fn, w).lower(a, b).compile()
    names = profile_step.op_names(compiled.as_text())
    jax.block_until_ready(compiled(a, b))
    times, wall = profile_step.trace(lambda: jax.block_until_ready(compiled(a, b)))
    total = sum(times.values())
    print(f"\n{name} scan, forward+backward at L = {length}: {wall * 1e3:.0f} ms wall, {len(times)} distinct ops, "
          f"{total / 1e3:.0f} ms summed; largest:")
    for op, us in times.most_common(top):
      print(f"  {us / 1e3:7.1f} ms  {op:28s} {names.get(op, '?')[-70:]}")
    out[name] = {"wall_ms": wall * 1e3, "ops": len(times), "top": [[op, us / 1e3] for op, us in times.most_common(top)]}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--inner", type=int, default=1024)
  parser.add_argument("--state", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--profile", type=int, default=0, help="trace both scans at this length (0: no)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scan.json"))
  args = parser.parse_args()
  print(f"[B, L, I, N] = [{args.batch}, L, {args.inner}, {args.state}] float32, {jax.devices()[0].platform}")
  print("| L | forward: associative ms | sequential ms | assoc / seq | fwd+bwd: associative ms | "
        "sequential ms | assoc / seq |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  rows = []
  for length in args.lengths:
    a, b, w = inputs(args.batch, length, args.inner, args.state)
    ref = jax.jit(IMPLS["sequential"])(a, b)
    np.testing.assert_allclose(jax.jit(IMPLS["associative"])(a, b), ref, rtol=1e-4, atol=1e-5)
    row = {"length": length}
    for name, fn in IMPLS.items():
      row[f"{name}_fwd_ms"] = 1e3 * best_time(jax.jit(fn), (a, b), args.repeats)
      row[f"{name}_fwd_bwd_ms"] = 1e3 * best_time(fwd_bwd(fn, w), (a, b), args.repeats)
    rows.append(row)
    print(f"| {length} | {row['associative_fwd_ms']:.1f} | {row['sequential_fwd_ms']:.1f} | "
          f"{row['associative_fwd_ms'] / row['sequential_fwd_ms']:.2f} | {row['associative_fwd_bwd_ms']:.1f} | "
          f"{row['sequential_fwd_bwd_ms']:.1f} | {row['associative_fwd_bwd_ms'] / row['sequential_fwd_bwd_ms']:.2f} |",
          flush=True)
  profiles = profile(args, args.profile) if args.profile else {}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"batch": args.batch, "inner": args.inner, "state": args.state, "rows": rows,
               "profile_length": args.profile, "profiles": profiles}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
