"""`python -m uqa_jax.tools.sweep --configs A B ... [--x encoder_parameters|max_len] [--name N] [--root DIR] [-- overrides]`.

Runs each config with `python -m uqa_jax.main` in its own workdir (`DIR/<config name>-<argument>`,
as `main` names them), one after the other; rerunning the same command resumes: finished stages
are reused, an interrupted one resumes from its checkpoint, and a workdir made with other
settings stops the sweep naming the keys (the stale-state rule of every run). Overrides after
`--` go to every run. Then it collects what each run measured and writes, under
`DIR/sweep-<name>/`:
  sweep.md / sweep.json  one row per config: the x value, parameters (encoder; all), Recall@10 and
                         NDCG@10 of Stage 1 next to the popularity baseline, and, when the run
                         went through Stage 3, the official accuracy of the aligned model and of
                         its shuffled-user control with 95% intervals
  sweep.png              those scores against x (log scale for parameters): the paper's Figure 3
                         (`configs/scale.py:<size>`, x = encoder parameters) and its sequence-length table
                         (`configs/seqlen.py:<L>`, x = max_len)
"""

import json
import os
import subprocess
import sys

from uqa_jax import stages
from uqa_jax.runtime import cli
from uqa_jax.runtime import errors
from uqa_jax.runtime import workdir as workdir_lib

X_AXES = ("encoder_parameters", "max_len")


class SweepError(errors.Refused, RuntimeError):
  """A run of the sweep failed or left no result; the message names the config and workdir."""


def run_all(configs, root: str, overrides=(), log=print) -> list[str]:
  """Runs every config (resuming); returns their workdirs. Stops at the first failing run."""
  workdirs = []
  for i, config in enumerate(configs):
    workdir = os.path.join(root, os.path.basename(stages.default_workdir(config)))
    log(f"sweep: [{i + 1}/{len(configs)}] {config} -> {workdir}")
    cmd = [sys.executable, "-m", "uqa_jax.main", "--config", config, "--workdir", workdir, *overrides]
    out = subprocess.run(cmd, check=False)
    if out.returncode:
      raise SweepError(f"sweep: {config} failed (exit {out.returncode}) in {workdir}; fix it and rerun the "
                       f"same command: finished runs and stages are reused")
    workdirs.append(workdir)
  return workdirs


def _read(path: str, config: str) -> dict:
  if not os.path.exists(path):
    raise SweepError(f"sweep: {config}: {path} is missing (did its run finish?)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def collect(configs, workdirs) -> list[dict]:
  """One row per run from its workdir: Stage 1 (always) and Stage 3 (when it ran)."""
  rows = []
  for config, workdir in zip(configs, workdirs):
    pre = _read(os.path.join(workdir, "pretrain", workdir_lib.RESULT), config)
    fp = _read(os.path.join(workdir, "pretrain", workdir_lib.FINGERPRINT), config)
    if "encoder_parameters" not in pre:
      raise SweepError(f"sweep: {config}: {workdir}/pretrain/{workdir_lib.RESULT} has no parameter count (made by an "
                       f"older version); rerun it with --config.restart=pretrain")
    row = {"config": config, "workdir": workdir, "parameters": pre["parameters"],
           "encoder_parameters": pre["encoder_parameters"], "max_len": fp["data.max_len"],
           "recall@10": pre["model"]["recall@10"], "ndcg@10": pre["model"]["ndcg@10"],
           "popularity recall@10": pre["popularity"]["recall@10"]}
    evaluate = os.path.join(workdir, "evaluate", workdir_lib.RESULT)
    if os.path.exists(evaluate):
      runs = _read(evaluate, config)["runs"]
      for run in ("aligned", "shuffled_user"):
        if run in runs:
          row[f"{run} official"] = runs[run]["official"]["accuracy"]
          row[f"{run} official ci"] = runs[run]["official"]["ci"]
    rows.append(row)
  return rows


def table(rows: list[dict], x: str) -> str:
  stage3 = any("aligned official" in r for r in rows)
  head = [x, "config", "parameters (all)", "Recall@10", "NDCG@10", "popularity Recall@10"]
  head += ["aligned official % [95% CI]", "shuffled_user official % [95% CI]"] if stage3 else []
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt_acc = lambda r, k: (f"{100 * r[k + ' official']:.1f} [{100 * r[k + ' official ci'][0]:.1f}, "
                          f"{100 * r[k + ' official ci'][1]:.1f}]" if k + " official" in r else "-")
  for r in sorted(rows, key=lambda r: r[x]):
    cells = [f"{r[x]:,}", r["config"], f"{r['parameters']:,}",
             f"{r['recall@10']:.4f}", f"{r['ndcg@10']:.4f}", f"{r['popularity recall@10']:.4f}"]
    cells += [fmt_acc(r, "aligned"), fmt_acc(r, "shuffled_user")] if stage3 else []
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], x: str, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = sorted(rows, key=lambda r: r[x])
  stage3 = any("aligned official" in r for r in rows)
  fig, axes = plt.subplots(1, 2 if stage3 else 1, figsize=(11 if stage3 else 6, 4.2), squeeze=False)
  xs = [r[x] for r in rows]
  ax = axes[0][0]
  ax.plot(xs, [r["recall@10"] for r in rows], "o-", label="Recall@10")
  ax.plot(xs, [r["ndcg@10"] for r in rows], "s-", label="NDCG@10")
  ax.plot(xs, [r["popularity recall@10"] for r in rows], "k--", label="popularity Recall@10")
  ax.set_title("Stage 1: next-item retrieval")
  if stage3:
    ax = axes[0][1]
    for run, marker in (("aligned", "o-"), ("shuffled_user", "s--")):
      have = [r for r in rows if f"{run} official" in r]
      acc = [100 * r[f"{run} official"] for r in have]
      err = [[a - 100 * r[f"{run} official ci"][0] for a, r in zip(acc, have)],
             [100 * r[f"{run} official ci"][1] - a for a, r in zip(acc, have)]]
      ax.errorbar([r[x] for r in have], acc, yerr=err, fmt=marker, capsize=3, label=run)
    ax.set_title("Stage 3: official accuracy, % (95% CI)")
  for ax in axes[0]:
    if x == "encoder_parameters":
      ax.set_xscale("log")
    ax.set_xlabel("encoder parameters" if x == "encoder_parameters" else "sequence length L (max_len)")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(rows: list[dict], x: str, out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(out_dir, "sweep.md"), "w", encoding="utf-8") as f:
    f.write(table(rows, x))
  plot(rows, x, os.path.join(out_dir, "sweep.png"))


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  overrides = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  parser = cli.parser("uqa_jax.tools.sweep", __doc__)
  parser.add_argument("--configs", nargs="+", required=True, help="configs/<name>.py[:arg] ...")
  parser.add_argument("--x", choices=X_AXES, default="encoder_parameters", help="the x axis of the table and plot")
  parser.add_argument("--name", default="", help="the sweep's name (default: the first config's file name)")
  parser.add_argument("--root", default="workdir", help="where the runs' workdirs and the sweep's outputs go")
  parser.add_argument("--collect_only", action="store_true", help="only tabulate finished runs")
  sys.exit(cli.run(parser, lambda args: _sweep(args, overrides), argv))


def _sweep(args, overrides) -> int:
  name = args.name or os.path.splitext(os.path.basename(args.configs[0].partition(":")[0]))[0]
  if args.collect_only:  # a failing run or a missing result: SweepError, one line
    workdirs = [os.path.join(args.root, os.path.basename(stages.default_workdir(c))) for c in args.configs]
  else:
    workdirs = run_all(args.configs, args.root, overrides)
  rows = collect(args.configs, workdirs)
  out_dir = os.path.join(args.root, f"sweep-{name}")
  write(rows, args.x, out_dir)
  print(table(rows, args.x), end="")
  print(f"sweep: wrote {out_dir}/sweep.md, sweep.json, sweep.png")
  return 0


if __name__ == "__main__":
  main()
