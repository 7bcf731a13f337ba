"""Report: the paper's tables from stored results alone, every accuracy with its 95% interval.

Reads `<workdir>/evaluate/<run>/result.json` (and `predictions.jsonl` for paired comparisons)
of this workdir and of every workdir in `report.include` (e.g. the `zeros` control, trained in
its own workdir with `--config.align.user=zeros`), and writes to `<workdir>/report/`:
  report.md    Table 2 (runs x DF, MF, IP, AP, LI, SI, IT, the three groups, overall; official
               and strict), the ranked variant on the questions that list candidates,
               `ranked_all` on every sub-task (with the train-prior and chance floors), Tables
               3/4 (input and pretrain-loss ablations, when runs differ in them), Table 7
               (prompt tokens and prefill seconds per question), the paired comparisons of
               each trained encoder with the controls and floors, and the answer NLL gain of
               the own user's prompt over a shuffled user's per sub-task (paired)
  report.json  the same numbers
               The last section says where user information is lost: per sub-task, the count
               ceiling and the encoder probe (`workdir/diagnose`, when that stage ran), the
               trained model, shuffled_user and the oracle reader (an included workdir aligned
               with `align.user=oracle_titles`), with the answer-NLL gains and a verdict per level,
               and the reading ladder: text20 aligned on the same budget (an included workdir
               with `align.user=text20`), the oracle reader and the trained encoder, each own
               user against a shuffled one, and the rung where each difference is gone
  accuracy_<variant>.png  per-sub-task bars with interval whiskers, one bar per run
It prints Table 2 and, per rule (official; ranked_all with the train-prior floor), one line
saying whether the trained encoder beats `shuffled_user`, `zeros` and `random_encoder` beyond
noise (paired bootstrap over users, p < 0.05, and the difference's interval above zero). It runs every time (`ALWAYS_RUN`): an included workdir may have changed.
"""

import os

from uqa_jax.config import blocks
from uqa_jax.config.recipes import EvaluateConfig
from uqa_jax.config.recipes import ReportConfig
from uqa_jax.evaluation import diagnosis as diagnosis_lib
from uqa_jax.evaluation import scoring
from uqa_jax.evaluation.tables import (KINDS, ablation, changed, collect, comparisons, cost_table, figure,
                                       cell, nll_gains, nll_table, nll_verdict, table,
                                       verdict)
from uqa_jax.runtime import atomic

BLOCKS = ("report",)
UPSTREAM = ("evaluate",)
VERSION = 1  # of what it computes; the rule for bumping it: uqa_jax/stages/__init__.py
PROCESSES = "main"  # process 0 writes the report; the others wait
ALWAYS_RUN = True


def fingerprint(config) -> dict:
  return {"report": blocks.fingerprint(blocks.read(config, ReportConfig))}


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
        "## Ranked on every sub-task (`ranked_all`)", "",
        "Each question's gold among up to K candidates: other users' golds of its template, drawn by how often "
        "they occur (IP and AP keep their listed candidates); the most likely candidate is the answer. Every run "
        "ranks the same sets. `floor: train prior` picks the candidate most frequent among the align-train golds; "
        "chance is the mean of 1/K.", "",
        *table(results, "ranked_all"), "",
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
  diag_lines, diag_said = diagnosis_lib.diagnosis(workdir, results, gains, comps, changes, samples)
  md += ["## Where user information is lost (official rule, % [95% interval]; NLL gain in nats/token)", "",
         *diag_lines, "", diag_said, "", line, ""]
  if figures:
    for variant in ("official", "strict"):
      name = f"accuracy_{variant}.png"
      figure(results, variant, os.path.join(out_dir, name))
      md += [f"![{variant}]({name})", ""]
  report = {"results": [{k: v for k, v in r.items()} for r in results], "comparisons": comps,
            "answer_nll_gains": gains, "changed_answers": changes, "diagnosis": diag_said, "verdict": line}
  atomic.write_json(os.path.join(out_dir, "report.json"), report)
  atomic.write_text(os.path.join(out_dir, "report.md"), "\n".join(md))
  for variant, what in (("official", "official rule"), ("ranked_all", "ranked_all: the gold among K candidates by answer NLL")):
    if len(rows := table(results, variant)) > 2:  # a run scored under it (ranked_all: runs that ranked)
      log(f"report: Table 2 ({what}; accuracy % [95% interval over users])\n" + "\n".join(rows))
  log("report: overall accuracy by variant (% [95% interval]):\n" + "\n".join(
      f"  {r['label']:28} " + "  ".join(f"{v} {cell(r['scores'].get(v, {}).get('cells', {}).get('overall')):20}" for v in scoring.VARIANTS)
      for r in results))
  log(line)
  log("report: diagnosis: " + diag_said)
  log(f"report: {os.path.join(out_dir, 'report.md')}")
  return {"verdict": line, "runs": len(results)}


def run(config, workdir: str, log=print) -> dict:
  r = blocks.read(config, ReportConfig)
  return write(workdir, r.include, r.figures, blocks.read(config, EvaluateConfig).bootstrap_samples, log)
