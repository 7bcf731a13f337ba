"""Does the memory planner's figure hold on a real accelerator? Planned vs measured peak.

  python benchmarks/plan_check.py --size 1b --batches 64 128 [--out DIR]

For each batch: one process plans the Stage 1 step of `configs/scale.py:<size>` on one device
(`uqa_jax.tools.plan`, nothing allocated), then allocates the state and runs two real steps, and reads
the device's `peak_bytes_in_use`. Each batch runs in its own process, so the peak is that run's.
Prints planned vs measured GiB and the device's limit; writes plan_check.json under --out.
Needs a device with memory statistics (a GPU or TPU); on CPU there are none.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ONE = r"""
import json, sys
import jax
from configs import scale
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.runtime import distributed
from uqa_jax.runtime import planner
from uqa_jax.stages import pretrain
size, batch, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = scale.get_config(size)
config.pretrain.batch_size = batch
config.mesh = {"data": 1, "fsdp": 1, "tensor": 1}
parts = pretrain.build(config, workdir, devices=jax.devices()[:1])
p = planner.plan(parts.target())
row = {"size": size, "batch": batch, "planned": p.step.peak, "state": p.state_bytes, "limit": p.device_memory,
       "fits": p.fits, "measured": None}
if p.fits:
  state = parts.init(jax.random.PRNGKey(0))
  data = distributed.GlobalBatches(iter(pipeline.make_dataset(f"{workdir}/data/pretrain_data_train.arrow", parts.pipe)),
                                   parts.batch_shardings)
  for _ in range(2):
    state, m = parts.step(state, next(data))
  jax.block_until_ready(m)
  row["loss"] = float(m["loss"])
  row["measured"] = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
print("ROW", json.dumps(row))
"""


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="1b")
  parser.add_argument("--batches", nargs="+", type=int, default=[64, 128])
  parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
  args = parser.parse_args(argv)
  from configs import scale  # pylint: disable=import-outside-toplevel
  from uqa_jax import stages  # pylint: disable=import-outside-toplevel
  workdir = tempfile.mkdtemp(prefix="uqa-plan-check-")
  stages.run("data", scale.get_config(args.size), workdir, log=lambda *_: None)
  rows = []
  print(f"{'size':>5} {'batch':>6} {'planned GiB':>12} {'measured GiB':>13} {'limit GiB':>10}", flush=True)
  for batch in args.batches:
    out = subprocess.run([sys.executable, "-c", ONE, args.size, str(batch), workdir], capture_output=True, text=True,
                         timeout=900, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("ROW ")), None)
    if line is None:
      print(f"batch {batch}: failed\n{out.stderr[-2000:]}", flush=True)
      continue
    row = json.loads(line[4:])
    rows.append(row)
    gib = lambda n: f"{n / 2**30:.2f}" if n is not None else "-"
    print(f"{args.size:>5} {batch:>6} {gib(row['planned']):>12} {gib(row['measured']):>13} {gib(row['limit']):>10}"
          + ("" if row["fits"] else "  (does not fit: not run)"), flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "plan_check.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main(sys.argv[1:])
