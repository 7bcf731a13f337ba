"""One report per seed joined: the tables the README quotes for a run repeated over seeds.

  python -m uqa_jax.tools.seeds workdir/default_full-trained-s0 workdir/default_full-trained-s1 [--out FILE.md]

Reads each workdir's `report/report.json` (the report stage, every included workdir's runs with
it) and `diagnose/result.json`, checks that each report's runs share one seed and that the seeds
differ, and prints
  * Table 2 per scoring variant: each run's accuracy per sub-task as the mean over seeds with
    every seed's value, next to the count ceiling and the encoder probe;
  * every paired comparison (trained encoder minus a control, baseline or floor) per seed, with
    its 95% interval and p;
  * the answer-NLL gain over shuffled_user per sub-task and seed;
  * one verdict per control and variant: the trained encoder beats it when, in every seed, the
    paired difference's 95% interval is above zero with p < 0.05, and the mean difference is
    larger than the seed-to-seed spread (max - min) of the trained encoder's own accuracy (the
    conservative reading of "beyond the seed-to-seed spread": the seed regenerates the data too,
    so that spread includes how hard each seed's questions are; the spread of the differences is
    printed beside it).
A run is keyed by its label and the workdir it came from, the seed suffix (`-s<N>`) dropped;
one missing from a seed is listed, never averaged over fewer seeds silently.
"""

import os

import numpy as np

from uqa_jax.evaluation import tables
from uqa_jax.runtime import atomic
from uqa_jax.runtime import cli
from uqa_jax.runtime import errors
from uqa_jax.runtime import workdir as workdir_lib

DIAGNOSE_ROWS = (("count ceiling", "ceiling"), ("encoder probe", "probe"), ("majority answer", "probe_majority"),
                 ("probe, shuffled labels", "probe_shuffled_labels"))


def _workdir_of(run_dir: str) -> str:
  """`<workdir>/evaluate/<run>` -> `<workdir>`."""
  return os.path.dirname(os.path.dirname(os.path.normpath(run_dir)))


_role = tables.workdir_role


def load(workdirs: list[str]) -> list[dict]:
  """Per seed: {"workdir", "seed", "report", "diagnose"}; a missing report or diagnose result is
  an error naming it, and so are two workdirs of one seed or one report joining several seeds."""
  if len(workdirs) < 2:
    raise ValueError(f"seeds: expected the workdirs of two or more seeds, got {workdirs}")
  if len({os.path.realpath(w) for w in workdirs}) < len(workdirs):
    raise ValueError(f"seeds: a workdir is given twice in {workdirs}")
  out = []
  for w in workdirs:
    path = os.path.join(w, "report", "report.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"seeds: {path} is missing; run the report stage in {w} first")
    diag = os.path.join(w, "diagnose", workdir_lib.RESULT)
    if not os.path.exists(diag):
      raise FileNotFoundError(f"seeds: {diag} is missing (the count ceiling and the encoder probe); "
                              f"run the diagnose stage in {w} first")
    report = atomic.read_json(path)
    out.append({"workdir": w, "seed": report_seed(report, path), "report": report, "diagnose": atomic.read_json(diag)})
  by_seed = {}
  for s in out:
    if s["seed"] in by_seed:
      raise ValueError(f"seeds: {by_seed[s['seed']]} and {s['workdir']} are both seed {s['seed']}")
    by_seed[s["seed"]] = s["workdir"]
  return out


def report_seed(report: dict, path: str) -> int:
  """The one seed every run of a report was made with (a control from another seed's workdir is
  an error naming it, not a comparison over other data)."""
  seeds = {}
  for r in report["results"]:
    if "seed" not in r:
      raise ValueError(f"seeds: {path}: run {r['label']} ({r['dir']}) records no seed")
    seeds.setdefault(r["seed"], []).append(r["dir"])
  if len(seeds) != 1:
    raise ValueError(f"seeds: {path} joins runs of several seeds: "
                     + "; ".join(f"seed {k}: {', '.join(v)}" for k, v in sorted(seeds.items())))
  return next(iter(seeds))


def runs(seed: dict) -> dict:
  """{(role, label): {"kind", "scores"}} of one seed: its report's runs, then the diagnose rows."""
  main_role = _role(seed["workdir"])
  out = {(_role(r["workdir"]), r["label"]): r for r in seed["report"]["results"]}
  for label, name in DIAGNOSE_ROWS:
    if name not in seed["diagnose"]["runs"]:
      raise ValueError(f"seeds: {seed['workdir']}/diagnose/{workdir_lib.RESULT} has no '{name}' run")
    out[(main_role, label)] = {"kind": "diagnose", "scores": seed["diagnose"]["runs"][name]["scores"]}
  return out


def _display(key, main_role) -> str:
  role, label = key
  return label if role == main_role else f"{label} [{role}]"


def accuracy_table(seeds: list[dict], variant: str, columns=tables.COLUMNS,
                   headers=tables.HEADERS) -> tuple[list[str], list[str]]:
  """(markdown rows: mean % over seeds with each seed's value, runs missing from some seed)."""
  per_seed = [runs(s) for s in seeds]
  main_role = _role(seeds[0]["workdir"])
  keys = [k for k in per_seed[0] if all(k in p for p in per_seed)]
  kinds = tables.KINDS + ("diagnose",)
  keys.sort(key=lambda k: (kinds.index(per_seed[0][k]["kind"]), k[1]))
  missing = sorted({_display(k, main_role) for p in per_seed for k in p if not all(k in q for q in per_seed)})
  lines = ["| run | kind | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 2)]
  for k in keys:
    cells = []
    for c in columns:
      values = [p[k]["scores"].get(variant, {}).get("cells", {}).get(c) for p in per_seed]
      if any(v is None for v in values):
        cells.append("—")
        continue
      acc = [100 * v["accuracy"] for v in values]
      cells.append(f"{np.mean(acc):.1f} ({' / '.join(f'{a:.1f}' for a in acc)})")
    if any(c != "—" for c in cells):
      lines.append(f"| {_display(k, main_role)} | {per_seed[0][k]['kind']} | " + " | ".join(cells) + " |")
  return lines, missing


def _by_key(items: list[dict], key_fn) -> dict:
  return {key_fn(x): x for x in items}


def _method_key(c: dict) -> tuple[str, str]:
  """A comparison's method as (workdir role, label): two trained runs may share a label."""
  return _role(_workdir_of(c["method_dir"])), c["method"]


def comparison_table(seeds: list[dict]) -> list[str]:
  comp_key = lambda c: (_method_key(c), (_role(_workdir_of(c["other_dir"])), c["other"]), c["variant"])
  per_seed = [_by_key(s["report"]["comparisons"], comp_key) for s in seeds]
  lines = ["| method | other | variant | " + " | ".join(f"seed {i}" for i in range(len(seeds))) + " |",
           "|" + "---|" * (len(seeds) + 3)]
  main_role = _role(seeds[0]["workdir"])
  for k in per_seed[0]:
    cells = []
    for p in per_seed:
      c = p.get(k)
      cells.append("—" if c is None else f"not compared: {c['skipped']}" if "p_value" not in c else
                   f"{c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f}")
    lines.append(f"| {_display(k[0], main_role)} | {_display(k[1], main_role)} | {k[2]} | " + " | ".join(cells) + " |")
  return lines


def _cell_order(cell: str) -> tuple:
  """overall, then the sub-tasks in the paper's order, then the groups."""
  if cell in tables.COLUMNS:
    return (tables.COLUMNS.index(cell) + 1) % len(tables.COLUMNS), cell
  return len(tables.COLUMNS), cell


def nll_table(seeds: list[dict]) -> list[str]:
  gain_key = lambda g: (_role(_workdir_of(g["method_dir"])), g["method"])
  per_seed = [_by_key(s["report"]["answer_nll_gains"], gain_key) for s in seeds]
  main_role = _role(seeds[0]["workdir"])
  lines = ["| aligned model | cell | " + " | ".join(f"seed {i}" for i in range(len(seeds))) + " |",
           "|" + "---|" * (len(seeds) + 2)]
  keys = list(dict.fromkeys(k for p in per_seed for k in p))  # a model one seed skipped is still listed
  for k in keys:
    cells = {c for p in per_seed for c in p.get(k, {}).get("cells", {})}
    if not cells:
      skipped = "; ".join(f"seed {i}: {p[k].get('skipped', 'no gains')}" for i, p in enumerate(per_seed) if k in p)
      lines.append(f"| {_display(k, main_role)} | not measured ({skipped}) | " + " | ".join("—" for _ in per_seed) + " |")
      continue
    for cell in sorted(cells, key=_cell_order):
      out = []
      for p in per_seed:
        c = p.get(k, {}).get("cells", {}).get(cell)
        out.append("—" if c is None else f"{c['gain']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], p={c['p_value']:.3f}")
      lines.append(f"| {_display(k, main_role)} | {cell} | " + " | ".join(out) + " |")
  return lines


def verdicts(seeds: list[dict], variant: str = "official") -> list[str]:
  """Per trained encoder and control: beaten in every seed beyond the interval and by more than the
  seed-to-seed spread of the encoder's accuracy? Then one line for the goal (shuffled_user and zeros)."""
  lines = []
  main_role = _role(seeds[0]["workdir"])
  key_of_run = lambda r: (_role(_workdir_of(r["dir"])), r["label"])
  for method in (r for r in seeds[0]["report"]["results"] if r["kind"] == "method"):
    key, name = key_of_run(method), _display(key_of_run(method), main_role)
    acc = []
    for s in seeds:
      m = next((r for r in s["report"]["results"] if r["kind"] == "method" and key_of_run(r) == key), None)
      acc.append(None if m is None else m["scores"][variant]["cells"]["overall"]["accuracy"])
    if any(a is None for a in acc):
      lines.append(f"{name}: not in every seed")
      continue
    spread = max(acc) - min(acc)
    beaten = {}
    prior = ("floor: train prior",) if variant == "ranked_all" else ()  # ranked_all's score must beat it too
    for other in tables.CONTROLS + prior:
      diffs = [tables.against([c for c in s["report"]["comparisons"] if _method_key(c) == key
                               and c["variant"] == variant], other) for s in seeds]
      if any(c is None or "p_value" not in c for c in diffs):
        lines.append(f"{name} vs {other} ({variant}): not compared in every seed")
        continue
      every = all(c["ci"][0] > 0 and c["p_value"] < tables.ALPHA for c in diffs)
      values = [c["difference"] for c in diffs]
      mean = float(np.mean(values))
      beaten[other] = every and mean > spread
      lines.append(
          f"{name} {'beats' if beaten[other] else 'does not beat'} {other} ({variant}, overall): differences "
          + ", ".join(f"{c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}]" for c in diffs)
          + f"; mean {mean:+.1%} (spread of the differences {max(values) - min(values):.1%}); "
          f"{'above zero in every seed' if every else 'not above zero in every seed'}; "
          f"seed-to-seed spread of {name}'s accuracy {spread:.1%}")
    wanted = ("shuffled_user", "zeros") + prior
    goal = [o for o in wanted if beaten.get(o)]
    lines.append(f"goal for {name} (beat {' and '.join(wanted)}, {variant}, beyond the intervals and the spread): "
                 + ("met" if len(goal) == len(wanted) else "not met" + (f" (beats only {', '.join(goal)})" if goal else "")))
  return lines


def diagnosis(seed: dict) -> str:
  if not seed["report"].get("diagnosis"):
    raise ValueError(f"seeds: {seed['workdir']}/report/report.json has no diagnosis; rerun its report stage")
  return seed["report"]["diagnosis"]


def write(workdirs: list[str]) -> str:
  seeds = load(workdirs)
  md = [f"# Across {len(seeds)} seeds: {', '.join(workdirs)}", "",
        "Accuracy in %: the mean over seeds, each seed's value in brackets (seed order as given).", ""]
  ranked_all = all(_has_variant(s, "ranked_all") for s in seeds)
  for variant, title in (("official", "official rule"), ("strict", "strict"), ("ranked", "ranked (questions with candidates)"),
                         *((("ranked_all", "ranked_all (every sub-task's candidates)"),) if ranked_all else ())):
    columns = tables.COLUMNS if variant != "ranked" else ["task/IP", "task/AP", "overall"]
    headers = tables.HEADERS if variant != "ranked" else ["IP", "AP", "All ranked"]
    lines, missing = accuracy_table(seeds, variant, columns, headers)
    md += [f"## Table 2 — {title}", "", *lines, ""]
    if missing:
      md += [f"Not in every seed (left out): {', '.join(missing)}", ""]
  md += ["## Paired comparisons per seed (trained minus other)", "", *comparison_table(seeds), "",
         "## Answer-NLL gain over shuffled_user per seed (nats/token)", "", *nll_table(seeds), "",
         "## Where user information is lost, per seed (each report's diagnosis)", "",
         *[f"- {s['workdir']} (seed {s['seed']}): {diagnosis(s)}" for s in seeds], "",
         "## Verdict", "", *[f"- {line}" for line in verdicts(seeds)],
         *[f"- {line}" for line in (verdicts(seeds, "ranked_all") if ranked_all else [])], ""]
  return "\n".join(md)


def _has_variant(seed: dict, variant: str) -> bool:
  """Whether every trained encoder of the seed's report was scored under `variant`."""
  methods = [r for r in seed["report"]["results"] if r["kind"] == "method"]
  return bool(methods) and all(r["scores"].get(variant, {}).get("cells") for r in methods)


def main(argv=None) -> int:
  parser = cli.parser("uqa_jax.tools.seeds", __doc__)
  parser.add_argument("workdirs", nargs="+", help="the trained runs' workdirs, one per seed (their reports done)")
  parser.add_argument("--out", help="also write the markdown here")
  return cli.run(parser, _join, argv)


def _join(args) -> int:
  try:
    text = write(args.workdirs)
  except ValueError as e:  # its messages name the workdir and the file
    raise errors.Refused(str(e)) from e
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
