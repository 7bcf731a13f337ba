"""HSTU attention: the fused Pallas kernel vs the jnp reference, by length (time bias on).

  .venv/bin/python benchmarks/hstu_attention.py [--lengths 128 256 512] [--batch 2] [--heads 8]
      [--head_dim 64] [--dtype float32] [--repeats 3] [--fused_max 512]

Forward + backward of SiLU(QKᵀ + rab + time bias)/n · V with the causal and padding mask
(the gradient reaches q, k, v, the relative-bias table and the time table), for
`hstu.hstu_attention` (XLA: [B, H, L, L] scores, attention and time-bias gather) and
`hstu_pallas.hstu_attention` (blockwise, none of them). Prints the best time of `--repeats`
and the compiled program's temporary memory (XLA's memory analysis) for each, and the largest difference between their outputs on valid
rows (the kernel is checked wherever it is timed). On CPU the
kernel runs in Pallas' interpret mode, which is for correctness, not speed: its times there
mean nothing, and `--fused_max` caps the lengths it runs at. On a GPU (benchmarks/gpu_check.sh)
both compile for real. Writes `benchmarks/results/hstu_attention.json` (or `--out`).
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

from uqa_jax.encoders import hstu
from uqa_jax.encoders import hstu_pallas

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

TIME_BUCKETS = 128


def inputs(b, length, h, e, dtype, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 7)
  q, k, v, cot = (jax.random.normal(x, (b, length, h, e), dtype) for x in ks[:4])
  rab_table = 0.1 * jax.random.normal(ks[4], (h, length))
  time_table = 0.1 * jax.random.normal(ks[5], (h, TIME_BUCKETS))
  ts = jnp.cumsum(jax.random.randint(ks[6], (b, length), 0, 600), axis=1).astype(jnp.int32)
  lengths = jnp.array([length] + [length * 3 // 4] * (b - 1))
  mask = (jnp.arange(length)[None] < lengths[:, None]).astype(jnp.int32)
  return q, k, v, cot, rab_table, time_table, ts, mask


def reference(q, k, v, rab_table, time_table, ts, mask):
  length = q.shape[1]
  rab = hstu.relative_bias(rab_table, length, length)[None]
  rab = rab + jnp.moveaxis(time_table[:, hstu.time_buckets(ts, TIME_BUCKETS)], 0, 1)
  return hstu.hstu_attention(q, k, v, rab.astype(q.dtype), mask, length)


def fused(q, k, v, rab_table, time_table, ts, mask):
  length = q.shape[1]
  rab = hstu.relative_bias(rab_table, length, length).astype(q.dtype)
  return hstu_pallas.hstu_attention(q, k, v, rab, mask, length, ts, time_table)


def fwd_bwd(fn, cot, ts, mask):
  loss = lambda q, k, v, rt, tt: jnp.sum((fn(q, k, v, rt, tt, ts, mask) * cot).astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))


def measure(fn, args, repeats):
  compiled = fn.lower(*args).compile()
  memory = compiled.memory_analysis()
  temp = getattr(memory, "temp_size_in_bytes", float("nan")) if memory is not None else float("nan")
  return timing.best_time(compiled, args, repeats), temp


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--fused_max", type=int, default=512, help="longest length the fused kernel runs at")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "hstu_attention.json"))
  args = parser.parse_args()
  platform = jax.devices()[0].platform
  mode = "interpret mode" if platform == "cpu" else "compiled"
  print(f"B {args.batch}, H {args.heads}, E {args.head_dim}, {args.dtype}, time bias on, forward+backward; "
        f"{platform} (fused kernel: {mode})")
  print("| L | reference ms | reference temp MiB | fused ms | fused temp MiB | fused / reference time | "
        "max abs diff (valid rows) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  rows = []
  for length in args.lengths:
    q, k, v, cot, rt, tt, ts, mask = inputs(args.batch, length, args.heads, args.head_dim, jnp.dtype(args.dtype))
    row = {"length": length, "max_abs_diff": float("nan")}
    if length <= args.fused_max:  # the kernel is checked where it is timed
      try:
        outs = [jax.jit(fn)(q, k, v, rt, tt, ts, mask).astype(jnp.float32) for fn in (reference, fused)]
        row["max_abs_diff"] = float(jnp.max(jnp.abs(outs[0] - outs[1]) * mask[:, :, None, None]))
      except Exception as e:  # recorded below by the timing attempt's own error
        print(f"  comparison at L={length}: {type(e).__name__}: {str(e)[:200]}")
    for name, fn in (("reference", reference), ("fused", fused)):
      if name == "fused" and length > args.fused_max:
        row[f"{name}_ms"] = row[f"{name}_temp_mib"] = float("nan")
        continue
      try:
        t, temp = measure(fwd_bwd(fn, cot, ts, mask), (q, k, v, rt, tt), args.repeats)
        row[f"{name}_ms"], row[f"{name}_temp_mib"] = 1e3 * t, temp / 2 ** 20
      except Exception as e:  # e.g. out of memory at long lengths: recorded, not hidden
        row[f"{name}_ms"] = row[f"{name}_temp_mib"] = float("nan")
        row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        print(f"  {name} at L={length}: {row[f'{name}_error']}")
    rows.append(row)
    print(f"| {length} | {row['reference_ms']:.1f} | {row['reference_temp_mib']:.1f} | {row['fused_ms']:.1f} | "
          f"{row['fused_temp_mib']:.1f} | {row['fused_ms'] / row['reference_ms']:.2f} | {row['max_abs_diff']:.2e} |",
          flush=True)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"platform": platform, "fused_mode": mode, **{k: v for k, v in vars(args).items() if k != "out"},
               "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
