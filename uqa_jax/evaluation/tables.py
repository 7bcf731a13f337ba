"""The report's tables and statistics, from stored evaluation results alone (no JAX).

`collect` reads each workdir's `evaluate/<run>/result.json`; `table` is Table 2 (runs x the seven
sub-tasks, the three groups and overall, every accuracy with its 95% interval over users);
`comparisons` pairs each trained encoder with the controls and floors (paired bootstrap over
users), `nll_gains` its answer NLL with shuffled_user's question by question, `changed` counts the
answers the own prompt changes; `verdict` / `nll_verdict` say in one line whether the encoder beats
its controls; `ablation` is Tables 3/4, `cost_table` Table 7, `figure` the accuracy bars. The
report stage (`uqa_jax/stages/report.py`) writes them; `uqa_jax.tools.seeds` reads them across seeds.
"""

import os
import re

from uqa_jax.data import schema
from uqa_jax.evaluation import paired
from uqa_jax.evaluation import scoring
from uqa_jax.runtime import atomic
from uqa_jax.runtime import errors
from uqa_jax.runtime import workdir as workdir_lib

COLUMNS = [f"task/{t}" for t in schema.TASKS] + [f"group/{g}" for g in schema.GROUPS] + ["overall"]
HEADERS = list(schema.TASKS) + ["SU", "AcP", "IP-g", "Overall"]  # groups: sequence understanding, action prediction, interest perception
CONTROLS = ("shuffled_user", "zeros", "random_encoder")
ALIGNED_CONTROLS = ("zeros", "random_encoder")  # each its own Stage 2 on that input, of a recipe
KINDS = ("method", "control", "diagnostic", "baseline", "floor")  # the tables' row order
ALPHA = 0.05



def workdir_role(workdir: str) -> str:
  """A workdir's name without its seed: `workdir/default_full-trained-s0` -> `default_full-trained`
  (what a run is called in every seed)."""
  return re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(workdir)))


def recipe_of(label: str) -> str:
  """What an aligned run's alignment adds to the QA steps: its label's part after " + "
  (`evaluator.recipe_suffix`), "" for the QA steps alone."""
  return label.partition(" + ")[2]


def collect(workdirs: list[str]) -> list[dict]:
  """Every run's stored result, with the directory it came from. The runs are those the
  workdir's finished evaluate stage made (its `result.json`); one of them missing or incomplete
  is an error naming it, never a report that quietly shows it as not run."""
  found = []
  for workdir in workdirs:
    root, runs = os.path.join(workdir, "evaluate"), expected_runs(workdir)
    mine = [{**atomic.read_json(os.path.join(root, run, workdir_lib.RESULT)), "dir": os.path.join(root, run),
             "workdir": workdir} for run in runs]
    for r in mine:
      r["recipe"] = recipe_of(r["label"]) if r["run"] == "aligned" else ""
    # Two aligned models of one label (the same recipe in two workdirs) are told apart by their
    # workdir's name without the seed (the same in every seed): "trmpp (default_full-trained)".
    # An included workdir's own controls (its shuffled_user, its floors) are named after its
    # aligned model where the label is taken: "shuffled_user of oracle reader (...)".
    taken = {r["label"] for r in found}
    for r in mine:
      if r["run"] == "aligned" and r["label"] in taken:
        r["label"] = f"{r['label']} ({workdir_role(workdir)})"
    aligned = next((r["label"] for r in mine if r["run"] == "aligned"), os.path.basename(workdir))
    for r in mine:
      if r["run"] != "aligned" and r["label"] in taken:
        r["label"] = f"{r['label']} of {aligned}"
    found += mine
  return found


class RunMissing(errors.Refused, FileNotFoundError):
  """A run the report must show is missing or incomplete."""


class RunsDiffer(errors.Refused, ValueError):
  """Runs the report would compare do not hold the same questions (or a stage lists none)."""


def expected_runs(workdir: str) -> list[str]:
  """The runs `workdir`'s evaluate stage finished, each with its `result.json` and
  `predictions.jsonl` present, else an error naming the run, the path and the fix."""
  root = os.path.join(workdir, "evaluate")
  stage = os.path.join(root, workdir_lib.RESULT)
  if not os.path.exists(stage):
    raise RunMissing(f"report: {stage} is missing: the evaluate stage has not finished in {workdir}; "
                            "run it there first")
  runs = sorted(atomic.read_json(stage).get("runs") or {})
  if not runs:
    raise RunsDiffer(f"report: {stage} lists no runs")
  for run in runs:
    for name in (workdir_lib.RESULT, "predictions.jsonl"):
      path = os.path.join(root, run, name)
      if not os.path.exists(path):
        raise RunMissing(
            f"report: run {run!r} of {workdir} is incomplete: {path} is missing (the evaluate stage made it); "
            f"rerun it with --workdir {workdir} --config.restart=evaluate")
  return runs


def cell(c) -> str:
  return "—" if c is None else f"{100 * c['accuracy']:.1f} [{100 * c['ci'][0]:.1f}, {100 * c['ci'][1]:.1f}]"


def table(results: list[dict], variant: str, columns=COLUMNS, headers=HEADERS) -> list[str]:
  """Markdown rows: one per run, accuracy % [95% interval] per column. Under `ranked_all`, runs
  without its scores are left out and a last row gives chance (the mean of 1 / K) per column."""
  if variant == "ranked_all":
    results = [r for r in results if r["scores"].get(variant, {}).get("cells")]
  lines = ["| run | kind | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 2)]
  for r in results:
    cells = r["scores"][variant]["cells"]
    lines.append(f"| {r['label']} | {r['kind']} | " + " | ".join(cell(cells.get(c)) for c in columns) + " |")
  if variant == "ranked_all" and results:
    cells = results[0]["scores"][variant]["cells"]
    lines.append("| floor: chance (1/K) | floor | " + " | ".join(
        f"{100 * cells[c]['chance']:.1f}" if c in cells else "—" for c in columns) + " |")
  return lines


def records_of(result):
  """A stored run's predictions (its `predictions.jsonl`)."""
  return scoring.read_jsonl(os.path.join(result["dir"], "predictions.jsonl"))


PRIOR_RUN = "floor_prior"  # ranked_all's train-prior floor (evaluator.py writes it)
PART_RUNS = ("floor_first_candidate", PRIOR_RUN)  # runs over part of the questions (those with candidates)


def comparisons(results: list[dict], samples: int) -> list[dict]:
  """Each trained encoder against every control, baseline and floor over the same questions
  (paired; against a run over part of the questions, e.g. the first-candidate floor, on that part)."""
  out = []
  for method in (r for r in results if r["kind"] == "method"):
    mine = records_of(method)
    mine_keys = paired.question_keys(mine)
    mine_set = set(mine_keys)
    for other in results:
      # Everything of its own workdir; of other workdirs, their trained models (the zeros and
      # random_encoder controls, text-aligned LLMs, ablated encoders), not their free controls.
      if other is method or (other["workdir"] != method["workdir"] and other["run"] != "aligned"):
        continue
      theirs = records_of(other)
      ours = mine
      keys = set(paired.question_keys(theirs))
      if keys != mine_set:
        if not (other["run"] in PART_RUNS and keys < mine_set):
          raise RunsDiffer(
              f"report: {method['dir']} and {other['dir']} hold different questions "
              f"({len(mine_set - keys)} only in the first, {len(keys - mine_set)} only in the "
              "second): another seed's or data set's workdir in report.include?")
        ours = [r for r, k in zip(mine, mine_keys) if k in keys]  # the questions with candidates
      for variant in scoring.VARIANTS:
        try:
          c = paired.compare(ours, theirs, variant, samples=samples)
        except paired.NothingScored as e:  # e.g. a floor has no ranked predictions
          c = {"variant": variant, "skipped": str(e)}
        out.append({"method": method["label"], "method_dir": method["dir"], "method_recipe": method["recipe"],
                    "other": other["label"], "other_dir": other["dir"], "other_run": other["run"],
                    "other_user": other.get("align_user"), "other_recipe": other["recipe"], **c})
  return out


def against(comps: list[dict], other: str) -> dict | None:
  """Of one method's comparisons under one variant, the one against `other`, found by what the
  other run is rather than by its label (which a recipe or a workdir's name extends):
  "shuffled_user" is the method's own model with another user's prompt; "zeros" and
  "random_encoder" a model aligned on that input with the method's recipe, else with the QA steps
  alone (no recipe in its label; never another recipe's); any other name (a floor) is found by its
  label, as are comparisons stored before they named their runs (no `other_run`)."""
  if other == "shuffled_user":
    found = [c for c in comps if c.get("other_run") == "shuffled_user"
             and os.path.dirname(c["other_dir"]) == os.path.dirname(c["method_dir"])]
  elif other in ALIGNED_CONTROLS:
    runs = [c for c in comps if c.get("other_run") == "aligned" and c.get("other_user") == other]
    found = ([c for c in runs if c["other_recipe"] == c["method_recipe"]]
             or [c for c in runs if not c["other_recipe"]])
  else:
    found = []
  named = [c for c in comps if c["other"] == other and ("other_run" not in c or other not in CONTROLS)]
  return (found or named or [None])[0]


def shuffled_of(results: list[dict], method: dict | None) -> dict | None:
  """The shuffled_user run of `method`'s own workdir (same trained model, another user's prompt)."""
  return next((r for r in results if method and r["run"] == "shuffled_user" and r["workdir"] == method["workdir"]),
              None)


def nll_gains(results: list[dict], samples: int) -> list[dict]:
  """Per aligned model (trained encoder, controls, oracle reader): the gold answer's NLL per token
  under a shuffled user's prompt minus under the own user's, per task (`paired.compare_nll`),
  from its workdir's `shuffled_user`."""
  out = []
  for method in (r for r in results if r["run"] == "aligned"):
    shuffled = shuffled_of(results, method)
    if shuffled is None:
      out.append({"method": method["label"], "method_dir": method["dir"], "skipped": "no shuffled_user run"})
      continue
    try:
      cells = paired.compare_nll(records_of(method), records_of(shuffled), samples=samples)
    except paired.MissingLikelihood as e:  # evaluate.answer_nll was off (a NaN or other questions: errors)
      out.append({"method": method["label"], "method_dir": method["dir"], "skipped": str(e)})
      continue
    out.append({"method": method["label"], "method_dir": method["dir"], "cells": cells})
  return out


def changed(results: list[dict]) -> dict:
  """{aligned run's dir: `paired.changed_answers` against its workdir's shuffled_user}."""
  out = {}
  for method in (r for r in results if r["run"] == "aligned"):
    shuffled = shuffled_of(results, method)
    if shuffled is not None:
      out[method["dir"]] = paired.changed_answers(records_of(method), records_of(shuffled))
  return out


def nll_table(gains: list[dict]) -> list[str]:
  lines = ["| method | cell | n | NLL own | NLL shuffled | gain (shuffled − own) | 95% interval | p |",
           "|---|---|---|---|---|---|---|---|"]
  for g in gains:
    if "skipped" in g:
      lines.append(f"| {g['method']} | not measured: {g['skipped']} | | | | | | |")
      continue
    for name, c in g["cells"].items():
      lines.append(f"| {g['method']} | {name} | {c['n']} | {c['own']:.4f} | {c['other']:.4f} | {c['gain']:+.4f} | "
                   f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] | {c['p_value']:.3f} |")
  return lines


def nll_verdict(gains: list[dict]) -> str:
  lines = []
  for g in gains:
    if "skipped" in g:
      continue
    c = g["cells"]["overall"]
    above = c["ci"][0] > 0 and c["p_value"] < ALPHA
    lines.append(f"answer NLL (paired over users): {g['method']}'s own prompt {'makes' if above else 'does not make'} "
                 f"the gold more likely than a shuffled user's beyond noise (gain {c['gain']:+.4f} nats/token "
                 f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], p={c['p_value']:.3f})")
  return "\n".join(lines)


def beats(c: dict) -> bool:
  return "p_value" in c and c["difference"] > 0 and c["ci"][0] > 0 and c["p_value"] < ALPHA


VERDICT_VARIANTS = {"official": "official rule", "ranked_all": "ranked_all, every sub-task's candidates"}


def verdict(results: list[dict], comps: list[dict]) -> str:
  """Per trained encoder, a line per variant (official; ranked_all where scored): does it beat
  shuffled_user, zeros and random_encoder beyond noise (each named "not run" when absent)? Under
  ranked_all the line also gives the train-prior floor's overall accuracy, which a model must beat
  too.

  Beyond noise: the paired bootstrap's 95% interval of the difference lies above zero and its
  two-sided p-value is below 0.05.
  """
  methods = [r for r in results if r["kind"] == "method"]
  if not methods:
    return "verdict: no trained-encoder run to judge"
  lines = []
  for m in methods:
    for variant, name in VERDICT_VARIANTS.items():
      if variant != "official" and not m["scores"].get(variant, {}).get("cells"):
        continue
      lines.append(f"verdict ({name}, paired bootstrap over users): {m['label']} " + _verdict_parts(m, comps, variant)
                   + _prior_note(results, m, comps, variant))
  return "\n".join(lines)


def _prior_note(results, m, comps, variant) -> str:
  """Under ranked_all: the train prior's overall accuracy beside the method's, and whether the
  method beats it beyond noise."""
  if variant != "ranked_all":
    return ""
  prior = next((c for c in comps if c["method_dir"] == m["dir"] and c["variant"] == variant and "p_value" in c
                and os.path.basename(c["other_dir"]) == PRIOR_RUN), None)
  if prior is None:
    return "; train prior: not run"
  mine = m["scores"][variant]["cells"]["overall"]
  return (f"; {'BEATS' if beats(prior) else 'does not beat'} the train prior "
          f"({100 * mine['accuracy']:.1f}% vs {100 * (mine['accuracy'] - prior['difference']):.1f}% on the same "
          f"questions, chance {100 * mine['chance']:.1f}%)")


def _verdict_parts(m, comps, variant) -> str:
  parts = []
  mine = [c for c in comps if c["method_dir"] == m["dir"] and c["variant"] == variant]
  for control in ("shuffled_user",) + ALIGNED_CONTROLS:
    c = against(mine, control)
    if c is None:
      parts.append(f"{control}: not run")
    elif "p_value" not in c:
      parts.append(f"{c['other']}: not comparable ({c['skipped']})")
    else:
      parts.append(f"{'BEATS' if beats(c) else 'does not beat'} {c['other']} "
                   f"({c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f})")
  return "; ".join(parts)


def task_cell(scores: dict, task: str):
  return scores["official"]["cells"].get(f"task/{task}")


def ablation(results: list[dict], key: str, title: str) -> list[str]:
  """Table 2's columns for the trained-encoder runs, when they differ in `key` (input_variant, pretrain_loss)."""
  methods = [r for r in results if r["kind"] == "method"]
  if len({r[key] for r in methods}) < 2:
    return []
  methods = sorted(methods, key=lambda r: (r[key], r["label"]))
  return [f"### {title} (official rule)", "", *table(methods, "official"), "",
          f"### {title} (strict)", "", *table(methods, "strict"), ""]


def cost_table(workdir: str) -> list[str]:
  """Table 7 from `evaluate/cost.json`: the soft prompt against the history written as text."""
  path = os.path.join(workdir, "evaluate", workdir_lib.EVAL_COST)
  if not os.path.exists(path):
    return [f"(not measured: no {path}; evaluate.prompt_cost was off)"]
  cost = atomic.read_json(path)
  lines = ["| input | prompt tokens / question | prefill ms / question |", "|---|---|---|"]
  for kind, c in cost.items():
    if "skipped" in c:
      lines.append(f"| {kind} | not measured: {c['skipped']} | |")
      continue
    lines.append(f"| {kind} | {c['prompt_tokens_mean']:.1f} | {1000 * c['prefill_s_per_question']:.1f} |")
  return lines


def figure(results: list[dict], variant: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  columns = [c for c in COLUMNS if any(c in r["scores"][variant]["cells"] for r in results)]
  fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(columns)), 4.5))
  width = 0.8 / max(len(results), 1)
  for i, r in enumerate(results):
    cells = r["scores"][variant]["cells"]
    xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(columns))]
    acc = [100 * cells[c]["accuracy"] if c in cells else 0 for c in columns]
    err = [[100 * (cells[c]["accuracy"] - cells[c]["ci"][0]) if c in cells else 0 for c in columns],
           [100 * (cells[c]["ci"][1] - cells[c]["accuracy"]) if c in cells else 0 for c in columns]]
    ax.bar(xs, acc, width, yerr=err, capsize=2, label=r["label"])
  ax.set_xticks(range(len(columns)), [HEADERS[COLUMNS.index(c)] for c in columns])
  ax.set_ylabel(f"accuracy, % ({variant}; 95% bootstrap interval)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
