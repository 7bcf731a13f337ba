"""Brief Stage 1 runs of the five encoders (configs/default.py's recipe) and their retrieval table.

  .venv/bin/python benchmarks/pretrain_table.py [--workdir workdir/brief] [--encoders trmpp hstu ...]
      [extra --config.* overrides passed to every run]

Each encoder runs `python -m uqa_jax.main --config configs/default.py:<encoder>` (stages data and
pretrain only, 1,000 steps after 100 warm-up steps: the demo runs 300 to keep `make demo` short)
in its own workdir; the table is read from each run's Stage 1 result (`<workdir>/<encoder>/pretrain/result.json`).
A finished run is not repeated: main reuses it when its settings are the same, and stops,
naming the differing keys, when they are not (pass another --workdir, or --config.restart=pretrain).
"""

import argparse
import json
import os
import subprocess
import sys


STEPS = ("--config.pretrain.steps=1000", "--config.pretrain.warmup_steps=100")  # the README table's budget


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="workdir/brief")
  parser.add_argument("--encoders", nargs="+", default=["gru4rec", "sasrec", "mamba4rec", "hstu", "trmpp"])
  args, overrides = parser.parse_known_args()
  rows = []
  for name in args.encoders:
    workdir = os.path.join(args.workdir, name)
    command = [sys.executable, "-m", "uqa_jax.main", f"--config=configs/default.py:{name}",
               f"--workdir={workdir}", "--config.stages=('data','pretrain')", *STEPS, *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    with open(os.path.join(workdir, "pretrain", "result.json"), encoding="utf-8") as f:
      rows.append((name, json.load(f)))
  popularity = rows[0][1]["popularity"]
  print(f"\npopularity baseline: Recall@10 {popularity['recall@10']:.4f}, NDCG@10 {popularity['ndcg@10']:.4f}")
  print("| encoder | Recall@10 | NDCG@10 | steps/s |")
  print("| --- | --- | --- | --- |")
  for name, m in rows:
    rate = "-" if m["steps_per_s"] is None else f"{m['steps_per_s']:.2f}"
    print(f"| {name} | {m['model']['recall@10']:.4f} | {m['model']['ndcg@10']:.4f} | {rate} |")


if __name__ == "__main__":
  main()
