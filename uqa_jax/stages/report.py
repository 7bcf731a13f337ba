"""Report: the paper's tables from stored results alone, every accuracy with its 95% interval.

Reads `<workdir>/evaluate/<run>/result.json` (and `predictions.jsonl` for paired comparisons)
of this workdir and of every workdir in `report.include` (e.g. the `zeros` control, trained in
its own workdir with `--config.align.user=zeros`), and writes to `<workdir>/report/`:
  report.md    Table 2 (runs x DF, MF, IP, AP, LI, SI, IT, the three groups, overall; official
               and strict), the ranked variant on the questions that list candidates, Tables
               3/4 (input and pretrain-loss ablations, when runs differ in them), Table 7
               (prompt tokens and prefill seconds per question), the paired comparisons of
               each trained encoder with the controls and floors, and the answer NLL gain of
               the own user's prompt over a shuffled user's per sub-task (paired)
  report.json  the same numbers
               The last section says where user information is lost: per sub-task, the count
               ceiling and the encoder probe (`workdir/diagnose`, when that stage ran), the
               trained model, shuffled_user and the oracle reader (an included workdir aligned
               with `align.user=oracle_titles`), with the answer-NLL gains and a verdict per level
  accuracy_<variant>.png  per-sub-task bars with interval whiskers, one bar per run
It prints Table 2 and one line saying whether the trained encoder beats `shuffled_user` and
`zeros` beyond noise (paired bootstrap over users, p < 0.05, and the difference's interval
above zero). It runs every time (`ALWAYS_RUN`): an included workdir may have changed.
"""

import dataclasses
import os

from uqa_jax import config_blocks
from uqa_jax import scoring
from uqa_jax import stages
from uqa_jax.data import schema

BLOCKS = ("report",)
UPSTREAM = ("evaluate",)
PROCESSES = "main"  # process 0 writes the report; the others wait
ALWAYS_RUN = True
COLUMNS = [f"task/{t}" for t in schema.TASKS] + [f"group/{g}" for g in schema.GROUPS] + ["overall"]
HEADERS = list(schema.TASKS) + ["SU", "AcP", "IP-g", "Overall"]  # groups: sequence understanding, action prediction, interest perception
CONTROLS = ("shuffled_user", "zeros", "random_encoder")
KINDS = ("method", "control", "diagnostic", "baseline", "floor")  # the tables' row order
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  include: tuple[str, ...] = ()  # other workdirs whose evaluate results join the tables
  figures: bool = True


def report_config(config) -> ReportConfig:
  return config_blocks.build(ReportConfig, config.report, "report")


def fingerprint(config) -> dict:
  return {"report": config_blocks.fingerprint(report_config(config))}


def collect(workdirs: list[str]) -> list[dict]:
  """Every run's stored result, with the directory it came from; an empty workdir is an error."""
  found = []
  for workdir in workdirs:
    root = os.path.join(workdir, "evaluate")
    runs = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, stages.RESULT))) \
        if os.path.isdir(root) else []
    if not runs:
      raise FileNotFoundError(f"report: no evaluate results under {root}; run the evaluate stage there first")
    mine = [{**stages.read_json(os.path.join(root, run, stages.RESULT)), "dir": os.path.join(root, run),
             "workdir": workdir} for run in runs]
    # An included workdir's own controls (its shuffled_user, its floors) are named after its
    # aligned model where the label is taken: "shuffled_user of oracle reader (...)".
    aligned = next((r["label"] for r in mine if r["run"] == "aligned"), os.path.basename(workdir))
    taken = {r["label"] for r in found}
    for r in mine:
      if r["run"] != "aligned" and r["label"] in taken:
        r["label"] = f"{r['label']} of {aligned}"
    found += mine
  return found


def _cell(c) -> str:
  return "—" if c is None else f"{100 * c['accuracy']:.1f} [{100 * c['ci'][0]:.1f}, {100 * c['ci'][1]:.1f}]"


def table(results: list[dict], variant: str, columns=COLUMNS, headers=HEADERS) -> list[str]:
  """Markdown rows: one per run, accuracy % [95% interval] per column."""
  lines = ["| run | kind | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 2)]
  for r in results:
    cells = r["scores"][variant]["cells"]
    lines.append(f"| {r['label']} | {r['kind']} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
  return lines


def _records(result):
  return scoring.read_jsonl(os.path.join(result["dir"], "predictions.jsonl"))


PART_RUNS = ("floor_first_candidate",)  # runs over part of the questions (those with candidates)


def comparisons(results: list[dict], samples: int) -> list[dict]:
  """Each trained encoder against every control, baseline and floor over the same questions
  (paired; against a run over part of the questions, e.g. the first-candidate floor, on that part)."""
  out = []
  for method in (r for r in results if r["kind"] == "method"):
    mine = _records(method)
    mine_keys = scoring.question_keys(mine)
    mine_set = set(mine_keys)
    for other in results:
      # Everything of its own workdir; of other workdirs, their trained models (the zeros and
      # random_encoder controls, text-aligned LLMs, ablated encoders), not their free controls.
      if other is method or (other["workdir"] != method["workdir"] and other["run"] != "aligned"):
        continue
      theirs = _records(other)
      ours = mine
      keys = set(scoring.question_keys(theirs))
      if keys != mine_set:
        if not (other["run"] in PART_RUNS and keys < mine_set):
          raise ValueError(
              f"report: {method['dir']} and {other['dir']} hold different questions "
              f"({len(mine_set - keys)} only in the first, {len(keys - mine_set)} only in the "
              "second): another seed's or data set's workdir in report.include?")
        ours = [r for r, k in zip(mine, mine_keys) if k in keys]  # the questions with candidates
      for variant in ("official", "strict", "ranked"):
        try:
          c = scoring.compare(ours, theirs, variant, samples=samples)
        except scoring.NothingScored as e:  # e.g. a floor has no ranked predictions
          c = {"variant": variant, "skipped": str(e)}
        out.append({"method": method["label"], "method_dir": method["dir"], "other": other["label"],
                    "other_dir": other["dir"], **c})
  return out


def shuffled_of(results: list[dict], method: dict | None) -> dict | None:
  """The shuffled_user run of `method`'s own workdir (same trained model, another user's prompt)."""
  return next((r for r in results if method and r["run"] == "shuffled_user" and r["workdir"] == method["workdir"]),
              None)


def nll_gains(results: list[dict], samples: int) -> list[dict]:
  """Per aligned model (trained encoder, controls, oracle reader): the gold answer's NLL per token
  under a shuffled user's prompt minus under the own user's, per task (`scoring.compare_nll`),
  from its workdir's `shuffled_user`."""
  out = []
  for method in (r for r in results if r["run"] == "aligned"):
    shuffled = shuffled_of(results, method)
    if shuffled is None:
      out.append({"method": method["label"], "method_dir": method["dir"], "skipped": "no shuffled_user run"})
      continue
    try:
      cells = scoring.compare_nll(_records(method), _records(shuffled), samples=samples)
    except scoring.MissingLikelihood as e:  # evaluate.answer_nll was off (a NaN or other questions: errors)
      out.append({"method": method["label"], "method_dir": method["dir"], "skipped": str(e)})
      continue
    out.append({"method": method["label"], "method_dir": method["dir"], "cells": cells})
  return out


def changed(results: list[dict]) -> dict:
  """{aligned run's dir: `scoring.changed_answers` against its workdir's shuffled_user}."""
  out = {}
  for method in (r for r in results if r["run"] == "aligned"):
    shuffled = shuffled_of(results, method)
    if shuffled is not None:
      out[method["dir"]] = scoring.changed_answers(_records(method), _records(shuffled))
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


def verdict(results: list[dict], comps: list[dict]) -> str:
  """One line per trained encoder: does it beat shuffled_user and zeros beyond noise (official rule)?

  Beyond noise: the paired bootstrap's 95% interval of the difference lies above zero and its
  two-sided p-value is below 0.05.
  """
  methods = [r for r in results if r["kind"] == "method"]
  if not methods:
    return "verdict: no trained-encoder run to judge"
  lines = []
  for m in methods:
    parts = []
    for control in ("shuffled_user", "zeros"):
      found = [c for c in comps if c["method_dir"] == m["dir"] and c["other"] == control and c["variant"] == "official"]
      if not found:
        parts.append(f"{control}: not run")
      elif "p_value" not in found[0]:
        parts.append(f"{control}: not comparable ({found[0]['skipped']})")
      else:
        c = found[0]
        parts.append(f"{'BEATS' if beats(c) else 'does not beat'} {control} "
                     f"({c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f})")
    lines.append(f"verdict (official rule, paired bootstrap over users): {m['label']} " + "; ".join(parts))
  return "\n".join(lines)


def _task_cell(scores: dict, task: str):
  return scores["official"]["cells"].get(f"task/{task}")


# The chain user information passes through, in order; `lost_at` names the first link that fails.
LEVELS = (
    ("data", "counting the visible clicks does not answer the questions above the best constant answer: "
             "the labels are not what the history says, so no model can be judged on them"),
    ("encoder", "a linear probe of the encoder state does not beat the majority answer: the state does not "
                "hold the answers (a better or longer-trained encoder)"),
    ("reader", "even an oracle soft prompt, which certainly holds the answer, leaves the gold's likelihood "
               "unchanged: the LLM does not learn to read soft tokens on this budget"),
    ("adapter", "the state holds the answers and the LLM can read soft tokens, but the trained soft prompt "
                "does not make the gold more likely: the adapter or its alignment"),
    ("answers", "the own user's soft prompt makes the gold more likely, but the generated answers are not "
                "right more often than with a shuffled user's prompt: the gain is too small to make the gold "
                "the most likely answer (see how many answers the prompt changes)"),
)


def lost_at(holds: dict) -> str:
  """One sentence from {level: True | False | None (not measured)} over `LEVELS`: the first
  measured level that fails, and which levels before it were not measured."""
  unknown = []
  for name, why in LEVELS:
    if holds.get(name) is None:
      unknown.append(name)
    elif not holds[name]:
      note = f" (not measured before it: {', '.join(unknown)})" if unknown else ""
      return f"Lost at: {name}{note}: {why}."
  if unknown:
    return f"Not lost at any measured level (not measured: {', '.join(unknown)})."
  return "Not lost: the trained encoder's answers beat shuffled_user beyond noise."


def _changed_cell(c) -> str:
  if c is None:
    return "—"
  return f"{100 * c['changed'] / c['n']:.0f}% (+{c['own_only']} / −{c['other_only']})"


def diagnosis(workdir: str, results: list[dict], gains: list[dict], comps=(), changes=None) -> tuple[list[str], str]:
  """(markdown table per sub-task, one-paragraph verdict): where user information is lost.

  Columns: the count ceiling and the encoder probe (with its majority answer and shuffled-label
  control) from `workdir/diagnose`, then the trained model, its shuffled_user control and the
  oracle reader (any `oracle_titles` run among the results), with each one's answer-NLL gain.
  """
  path = os.path.join(workdir, "diagnose", stages.RESULT)
  diag = stages.read_json(path) if os.path.exists(path) else None
  # The trained model of this workdir (the diagnose columns are this workdir's), not of an included one.
  method = next((r for r in results if r["kind"] == "method" and r["workdir"] == workdir), None)
  shuffled = shuffled_of(results, method)
  oracle = next((r for r in results if r["kind"] == "diagnostic"), None)
  gain_of = {g["method_dir"]: g["cells"] for g in gains if "cells" in g}
  columns = []
  if diag:
    columns += [(name, lambda t, n=run: _task_cell(diag["runs"][n]["scores"], t))
                for name, run in (("count ceiling", "ceiling"), ("encoder probe", "probe"),
                                  ("majority answer", "probe_majority"), ("probe, shuffled labels", "probe_shuffled_labels"))]
  floors = [next((r for r in results if method and r["run"] == run and r["workdir"] == method["workdir"]), None)
            for run in ("floor_constant", "floor_first_candidate")]
  for label, r in (("floor: constant", floors[0]), ("floor: first candidate", floors[1]), ("trained", method),
                   ("shuffled_user", shuffled), ("oracle reader", oracle)):
    if r is not None:
      columns.append((label, lambda t, r=r: _task_cell(r["scores"], t)))
  nll_cols = [(label, gain_of[r["dir"]]) for label, r in (("trained", method), ("oracle reader", oracle))
              if r is not None and r["dir"] in gain_of]
  changes = changes or {}
  changed_cols = [(label, changes[r["dir"]]) for label, r in (("trained", method), ("oracle reader", oracle))
                  if r is not None and r["dir"] in changes]
  head = [c for c, _ in columns] + [f"NLL gain, {label}" for label, _ in nll_cols] + \
      [f"answers changed, {label}" for label, _ in changed_cols]
  lines = ["| task | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
  for task in schema.TASKS:
    cells = [_cell(f(task)) for _, f in columns]
    cells += [(lambda c: "—" if c is None else f"{c['gain']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]")(g.get(f"task/{task}"))
              for _, g in nll_cols]
    cells += [_changed_cell(g.get(f"task/{task}")) for _, g in changed_cols]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  if changed_cols:
    lines += ["", "answers changed: the share of questions whose generated answer differs under a shuffled "
              "user's prompt; in brackets, right with the own prompt only / with the shuffled one only "
              "(official rule)"]
  said, holds = [], {}
  above = lambda c: c["ci"][0] > 0 and c["p_value"] < ALPHA
  if diag:
    ceil = diag["runs"]["ceiling"]["scores"]["official"]["cells"]
    constant = floors[0]["scores"]["official"]["cells"].get("overall") if floors[0] else None
    if constant is not None and "overall" in ceil:
      holds["data"] = ceil["overall"]["ci"][0] > constant["accuracy"]
    said.append("Data: counting the visible clicks answers " + ", ".join(
        f"{t} {100 * ceil[f'task/{t}']['accuracy']:.0f}%" for t in schema.TASKS if f"task/{t}" in ceil) + ".")
    c = diag.get("probe_vs_majority")
    if c:
      held = holds["encoder"] = above(c)
      said.append(f"Encoder: a linear probe of its state {'beats' if held else 'does not beat'} the majority answer "
                  f"beyond noise ({c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f}, "
                  f"on the {c['n']} probed questions whose gold is a train answer).")
    from uqa_jax.stages import diagnose
    lines += [""] + [f"- {line}" for line in diagnose.counted(diag)]
  else:
    said.append("Data and encoder: not diagnosed (add 'diagnose' to config.stages).")
  if oracle is None:
    said.append("Reader: not diagnosed (align with align.user=oracle_titles in its own workdir, with "
                "evaluate.runs including shuffled_user, and list it in report.include).")
  elif oracle["dir"] in gain_of:
    c = gain_of[oracle["dir"]]["overall"]
    read = holds["reader"] = above(c)
    said.append(f"Reader: with the oracle soft prompt the LLM {'uses' if read else 'does not use'} the user's "
                f"tokens beyond noise (NLL gain {c['gain']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]).")
  if method is not None and method["dir"] in gain_of:
    c = gain_of[method["dir"]]["overall"]
    used = holds["adapter"] = above(c)
    said.append(f"Trained encoder: its soft prompt {'carries' if used else 'does not carry'} user information into "
                f"the answers beyond noise (NLL gain {c['gain']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]).")
  if method is not None and method["dir"] in changes:
    c = changes[method["dir"]]["overall"]
    said.append(f"Answers: the shuffled user's prompt changes {c['changed']} of {c['n']} generated answers "
                f"({c['changed'] / c['n']:.0%}); {c['own_only']} are right with the own prompt only, "
                f"{c['other_only']} with the shuffled one only.")
  if method is not None:
    versus = [c for c in comps if c["method_dir"] == method["dir"] and c["other"] == "shuffled_user"
              and c["variant"] == "official" and "p_value" in c]
    if versus:
      holds["answers"] = beats(versus[0])
  said.append(lost_at(holds))
  if method is not None:
    lines = [f"For {method['label']} ({method['workdir']}):", ""] + lines
  return lines, " ".join(said)


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
  path = os.path.join(workdir, "evaluate", "cost.json")
  if not os.path.exists(path):
    return [f"(not measured: no {path}; evaluate.prompt_cost was off)"]
  cost = stages.read_json(path)
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


def write(workdir: str, include=(), figures: bool = True, samples: int = 1000, log=print) -> dict:
  """Builds the report from stored results alone; -> report.json's content."""
  results = collect([workdir] + [os.path.abspath(w) for w in include])
  results.sort(key=lambda r: (KINDS.index(r["kind"]), r["label"]))
  comps = comparisons(results, samples)
  gains = nll_gains(results, samples)
  line = "\n".join(x for x in (verdict(results, comps), nll_verdict(gains)) if x)
  out_dir = os.path.join(workdir, "report")
  os.makedirs(out_dir, exist_ok=True)
  ranked = [r for r in results if r["scores"]["ranked"]["cells"]]
  ranked_cols = ["task/IP", "task/AP", "group/action prediction", "overall"]
  md = ["# UQABench report", "", f"Runs from {', '.join(sorted({r['workdir'] for r in results}))}. "
        "Accuracy in %, with the 95% bootstrap interval over users in brackets.", "",
        "## Table 2 — official rule (`prediction.startswith(gold)`)", "", *table(results, "official"), "",
        "`floor: first candidate` answers only the questions that list candidates (IP, AP): its "
        "groups and overall are over those questions alone.", "",
        "## Table 2 — strict (normalised exact match)", "", *table(results, "strict"), "",
        "## Ranked: the most likely listed candidate (questions with candidates)", "",
        *table(ranked, "ranked", ranked_cols, ["IP", "AP", "AcP", "All ranked"]), "",
        *ablation(results, "input_variant", "Table 3 — input ablation"),
        *ablation(results, "pretrain_loss", "Table 4 — pretrain loss ablation"),
        "## Table 7 — prompt cost (prefill timed on one warm batch of 4 questions)", "", *cost_table(workdir), "",
        "## Paired comparisons (trained encoder minus other; bootstrap over users)", "",
        "| method | other | variant | difference | 95% interval | p |", "|---|---|---|---|---|---|"]
  for c in comps:
    if "p_value" in c:
      md.append(f"| {c['method']} | {c['other']} | {c['variant']} | {c['difference']:+.1%} | "
                f"[{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}] | {c['p_value']:.3f} |")
  skipped = [c for c in comps if "p_value" not in c]
  if skipped:
    md += ["", "Not compared:"] + [f"- {c['method']} vs {c['other']} ({c['variant']}): {c['skipped']}" for c in skipped]
  md += ["", "## Answer log-likelihood: own user vs shuffled_user (paired per question)", "",
         "The gold answer's NLL per token after each prompt, from the same trained model; the gain is "
         "shuffled minus own, so above zero means the own user's soft prompt makes the gold more likely.", "",
         *nll_table(gains), ""]
  changes = changed(results)
  diag_lines, diag_said = diagnosis(workdir, results, gains, comps, changes)
  md += ["## Where user information is lost (official rule, % [95% interval]; NLL gain in nats/token)", "",
         *diag_lines, "", diag_said, "", line, ""]
  if figures:
    for variant in ("official", "strict"):
      name = f"accuracy_{variant}.png"
      figure(results, variant, os.path.join(out_dir, name))
      md += [f"![{variant}]({name})", ""]
  report = {"results": [{k: v for k, v in r.items()} for r in results], "comparisons": comps,
            "answer_nll_gains": gains, "changed_answers": changes, "diagnosis": diag_said, "verdict": line}
  stages.write_json(os.path.join(out_dir, "report.json"), report)
  with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(md))
  log("report: Table 2 (official rule; accuracy % [95% interval over users])\n" + "\n".join(table(results, "official")))
  log("report: overall accuracy by variant (% [95% interval]):\n" + "\n".join(
      f"  {r['label']:28} " + "  ".join(f"{v} {_cell(r['scores'][v]['cells'].get('overall')):20}" for v in scoring.VARIANTS)
      for r in results))
  log(line)
  log("report: diagnosis: " + diag_said)
  log(f"report: {os.path.join(out_dir, 'report.md')}")
  return {"verdict": line, "runs": len(results)}


def run(config, workdir: str, log=print) -> dict:
  r = report_config(config)
  from uqa_jax.stages import evaluate
  return write(workdir, r.include, r.figures, evaluate.evaluate_config(config).bootstrap_samples, log)
