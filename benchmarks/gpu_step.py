"""Trm++ training steps in bfloat16 at the scale sweep's sizes, with MFU: for a lent GPU.

  python3 benchmarks/gpu_step.py [--sizes 25m 1b] [--batches 128 16] [--steps 10] [--out DIR]

Each size from `configs/scale.py` (its layers, width, heads, remat), item ids only with a
100,000 x 128 table, full-softmax NIP loss, AdamW; the encoder computes in bfloat16 over float32
parameters (`encoder.dtype`), attention by `encoder.attention_impl=auto` (cuDNN on a GPU in
bfloat16). Batch x 512 clicks per step (`--batches`, one per size; sized for one 80 GB card).
Prints step time, sequences/s and MFU = matmul FLOPs counted on the step's jaxpr / step time /
the bf16 matmul rate measured at 8192³ in the same run. Runs anywhere (on CPU use tiny
batches). Writes gpu_step.json under `--out`. With cuDNN attention the jaxpr holds attention as
one custom call, not `dot_general`s, so its FLOPs (4·B·H·L²·E per layer forward, 2x that
backward) are left out of the count and the MFU is a slight underestimate.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from configs import scale
from uqa_jax.runtime import flops as flops_lib

sys.path.insert(0, os.path.dirname(__file__))
import step_setup  # noqa: E402


def bench(size, batch, steps):
  c = scale.get_config(size)
  c.data.max_len = 512
  c.encoder.update(dtype="bfloat16", input_variant="no_side")
  c.pretrain.embed_dims = {"item": 128}
  shapes = step_setup.Shapes(batch=batch, length=512)
  step, state, b, _, _ = step_setup.build_from_config(c, {"vocab_sizes": {"item": shapes.items}},
                                                      step_setup.batch(shapes))
  flops = flops_lib.matmul_flops(step, state, b)
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, b).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run():
    holder["state"], holder["metrics"] = compiled(holder["state"], b)
    holder["metrics"]["loss"].block_until_ready()

  run()
  step_s = step_setup.median_time(run, steps)
  state, metrics = holder["state"], holder["metrics"]
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return {"size": size, "batch": batch, "parameters": n_params, "compile_s": compile_s,
          "step_s": step_s, "matmul_tflop": flops / 1e12, "loss": float(metrics["loss"])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", nargs="+", default=["25m", "1b"])
  parser.add_argument("--batches", type=int, nargs="+", default=[128, 16])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--matmul_n", type=int, default=8192)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args()
  if len(args.batches) != len(args.sizes):
    parser.error("--batches needs one batch size per --sizes entry")
  rate = step_setup.matmul_rate(args.matmul_n, dtype=jnp.bfloat16)  # default precision
  print(f"{jax.devices()[0].device_kind}: bf16 matmul at {args.matmul_n}³ {rate / 1e12:.0f} TFLOP/s")
  print("| size | parameters | batch x 512 | step ms | sequences/s | matmul TFLOP/step | MFU (of measured bf16) | compile s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  rows = []
  for size, batch in zip(args.sizes, args.batches):
    try:
      r = bench(size, batch, args.steps)
    except Exception as e:  # out of memory at this batch: recorded and said, not hidden
      print(f"| {size} | - | {batch} | {type(e).__name__}: {str(e)[:160]} |")
      rows.append({"size": size, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:400]}"})
      continue
    r["mfu"] = r["matmul_tflop"] * 1e12 / r["step_s"] / rate
    rows.append(r)
    print(f"| {size} | {r['parameters'] / 1e6:,.1f}M | {batch} | {r['step_s'] * 1e3:.1f} | {batch / r['step_s']:,.1f} | "
          f"{r['matmul_tflop']:.2f} | {r['mfu']:.0%} | {r['compile_s']:.0f} |", flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "gpu_step.json"), "w") as f:
    json.dump({"device": jax.devices()[0].device_kind, "bf16_matmul_tflops": rate / 1e12, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
