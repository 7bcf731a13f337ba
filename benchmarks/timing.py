"""Timing helpers every benchmark shares; imports only JAX and NumPy, so the scripts a GPU
machine runs without our whole environment (benchmarks/gpu_check.sh) can use them.

  python3 benchmarks/timing.py [--out DIR]   # float32 and bfloat16 matmul rates -> matmul.json
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def best_time(fn, args, repeats):
  """Best wall time of `fn(*args)` (blocked until ready) over `repeats` calls after a warm-up."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def median_time(run, steps):
  """Median wall time of `run()` (which must block) over `steps` calls; warm it up first."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_rate(n=2048, repeats=5, dtype=jnp.float32):
  """Matmul FLOP/s JAX reaches on this device at n³ (best of `repeats`)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), dtype)
  return 2 * n ** 3 / best_time(jax.jit(lambda x: x @ x), (a,), repeats)


def write_result(name: str, obj, directory: str = RESULTS) -> str:
  """Writes `obj` as <directory>/<name>.json (every benchmark's record); -> the path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}.json")
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, default=str)
  print(f"wrote {path}")
  return path


def main():
  parser = argparse.ArgumentParser(description="matmul rates of this device")
  parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args()
  device = jax.devices()[0]
  rows = []
  for n in args.sizes:
    for dtype in (jnp.float32, jnp.bfloat16):
      rate = matmul_rate(n, dtype=dtype)
      rows.append({"n": n, "dtype": jnp.dtype(dtype).name, "tflops": rate / 1e12})
      print(f"{device.device_kind}: {jnp.dtype(dtype).name} matmul at {n}³: {rate / 1e12:.3f} TFLOP/s "
            f"(default precision)", flush=True)
  write_result("matmul", {"device": device.device_kind, "rows": rows}, args.out)


if __name__ == "__main__":
  main()
