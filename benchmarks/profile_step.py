"""Where a Stage 1 training step's time goes: a per-op breakdown from `jax.profiler`.

  .venv/bin/python benchmarks/profile_step.py [--encoders trmpp sasrec] [--batch 8] [--length 512]
      [--layers 4] [--sl_chunk 0] [--top 8]

Builds the benchmarked step (`benchmarks/step_setup.py`: 4 layers, d 512, 4 heads, batch 8 x 512,
item ids only, a 100,000 x 128 item table, full-softmax NIP loss, AdamW), runs it once to
compile, then traces one step with `jax.profiler` (a Perfetto trace) and charges every XLA op
the trace timed to a part of the model by the op's name stack in the compiled HLO (the
`jax.named_scope`s and Flax module names the library sets): embedding gather/scatter-add,
attention (qkv/o projections, RoPE, scores, softmax), MLP (SwiGLU / ReLU FFN), norms, dropout,
the NIP loss, the optimizer. Prints a table per encoder (ms, share) and the top ops, and writes
`benchmarks/results/profile_step.json`. Op times are summed across the CPU runtime's threads,
so the shares are of the summed op time; the wall time of the traced step is printed beside.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
import step_setup  # noqa: E402

# (part, pattern on the op's name stack); the first match wins.
PARTS = (
    ("dropout", r"Dropout"),
    ("optimizer", r"optimizer"),
    ("NIP loss", r"sl_loss|cl_loss"),
    ("embedding (gather, scatter-add, proj)", r"/embed/"),
    ("attention: qkv/o projections", r"/(qkv|o)/dot_general"),
    ("attention: scores, softmax, AV, RoPE", r"/attention/|attention\)"),
    ("MLP", r"/mlp/|mlp\)"),
    ("norms", r"norm/"),
    ("NIP head", r"/head/"),
)


def part_of(op_name: str) -> str:
  for part, pattern in PARTS:
    if re.search(pattern, op_name):
      return part
  return "other"


def op_names(hlo_text: str) -> dict:
  """HLO instruction name -> its op_name metadata (the JAX name stack)."""
  names = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


def trace(run):
  """-> ({op name: summed µs}, wall s) of one traced call of `run` (which must block)."""
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    run()
    jax.profiler.stop_trace()
    wall = time.perf_counter() - start
    path, = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "SlinkyThreadPool")):
      times[e["name"]] += e.get("dur", 0.0)
  return times, wall


def profile(encoder, shapes, top):
  step, state, batch, _, _ = step_setup.build(encoder, shapes)
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  names = op_names(compiled.as_text())
  state, metrics = compiled(state, batch)
  metrics["loss"].block_until_ready()
  times, wall = trace(lambda: jax.block_until_ready(compiled(state, batch)))
  parts = collections.Counter()
  unnamed = 0.0
  for op, us in times.items():
    if op not in names:
      unnamed += us
    parts[part_of(names.get(op, ""))] += us
  total = sum(parts.values())
  print(f"\n{encoder}: traced step {wall:.2f} s wall, {total / 1e6:.2f} s summed op time "
        f"({unnamed / max(total, 1):.1%} of it in ops with no name stack)")
  print("| part | ms | share |")
  print("| --- | --- | --- |")
  for part, us in parts.most_common():
    print(f"| {part} | {us / 1e3:.0f} | {us / total:.1%} |")
  others = [(us, op) for op, us in times.items() if part_of(names.get(op, "")) == "other"]
  print("largest ops charged to 'other': " + ", ".join(
      f"{op} {us / 1e3:.0f} ms ({names.get(op, 'no name stack')[:60]})" for us, op in sorted(others)[-3:]))
  print(f"top {top} ops:")
  for op, us in times.most_common(top):
    print(f"  {us / 1e3:8.0f} ms  {op:32s} {names.get(op, '?')[:110]}")
  return {"wall_s": wall, "summed_op_s": total / 1e6,
          "parts_ms": {k: v / 1e3 for k, v in parts.items()},
          "top_ops": [{"op": op, "ms": us / 1e3, "name_stack": names.get(op, "")}
                      for op, us in times.most_common(top)]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoders", nargs="+", default=["trmpp", "sasrec"])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--sl_chunk", type=int, default=0)
  parser.add_argument("--top", type=int, default=8)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "profile_step.json"))
  args = parser.parse_args()
  shapes = step_setup.Shapes(layers=args.layers, batch=args.batch, length=args.length, sl_chunk=args.sl_chunk)
  print(f"{shapes}; {jax.devices()[0].platform}")
  result = {"shapes": vars(shapes) if hasattr(shapes, "__dict__") else str(shapes)}
  for encoder in args.encoders:
    result[encoder] = profile(encoder, shapes, args.top)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, default=str)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
