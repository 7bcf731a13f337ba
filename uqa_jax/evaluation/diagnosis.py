"""Where user information is lost: the chain data -> encoder -> reader -> adapter -> answers.

`diagnosis` builds the report's last section from the diagnose stage's result (the count ceiling
and the encoder probe), the trained model, its shuffled_user control and the oracle reader, with
each one's answer-NLL gain, and the reading ladder (`ladder`: the history as text, as oracle soft
tokens, as the encoder's soft tokens, each own user against a shuffled one); `lost_at` names the
first link of `LEVELS` that fails. `summary` and
`counted` are the diagnose stage's own lines.
"""

import os

from uqa_jax.data import schema
from uqa_jax.evaluation import paired
from uqa_jax.evaluation import tables
from uqa_jax.evaluation.tables import ALPHA, beats, shuffled_of
from uqa_jax.runtime import atomic
from uqa_jax.runtime import workdir as workdir_lib

RUNS = ("ceiling", "probe", "probe_majority", "probe_shuffled_labels")  # the diagnose stage's runs


# The chain user information passes through, in order; `lost_at` names the first link that fails.
LEVELS = (
    ("data", "counting the visible clicks does not answer the questions above the best constant answer: "
             "the labels are not what the history says, so no model can be judged on them"),
    ("text", "even with the history written as text, the LLM aligned on the same budget does not make the gold "
             "more likely than with another user's text: the LLM and the budget are the limit, not the embedding"),
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


# A level that bounds later ones: the text rung is the most explicit form of the history, so when
# it fails while the LLM reads a soft prompt (a later level holds) it is not where the user is lost.
BOUNDS = {"text": ("reader", "adapter", "answers")}


def lost_at(holds: dict) -> str:
  """One sentence from {level: True | False | None (not measured)} over `LEVELS`: the first
  measured level that fails, and which levels before it were not measured. A bounding level
  (`BOUNDS`) that fails while a level it bounds holds is named as such and passed over."""
  unknown, passed = [], []
  for name, why in LEVELS:
    if holds.get(name) is None:
      unknown.append(name)
      continue
    if holds[name]:
      continue
    above = [n for n in BOUNDS.get(name, ()) if holds.get(n)]
    if above:
      passed.append(f"{name} fails although {', '.join(above)} {'holds' if len(above) == 1 else 'hold'}, "
                    "so it is not where the user is lost")
      continue
    note = f" (not measured before it: {', '.join(unknown)})" if unknown else ""
    return f"Lost at: {name}{note}: {why}." + "".join(f" ({p}.)" for p in passed)
  tail = "".join(f" ({p}.)" for p in passed)
  if unknown:
    return f"Not lost at any measured level (not measured: {', '.join(unknown)}).{tail}"
  return f"Not lost: the trained encoder's answers beat shuffled_user beyond noise.{tail}"


def _changed_cell(c) -> str:
  if c is None:
    return "—"
  return f"{100 * c['changed'] / c['n']:.0f}% (+{c['own_only']} / −{c['other_only']})"


# The reading ladder: the same question asked with the history in ever less explicit form, each
# rung's own prompt against another user's (its workdir's shuffled_user).
RUNGS = (("text", "text20 aligned (the last 20 titles as text)"),
         ("oracle", "oracle soft tokens (the titles' LLM embeddings)"),
         ("encoder", "encoder soft tokens (the trained model)"))
LADDER_VARIANTS = ("official", "ranked_all")
WHERE = {"text": "include a text20 workdir with report.include",  # how a missing rung gets into the report
         "oracle": "include an oracle_titles workdir with report.include",
         "encoder": "no trained encoder with its shuffled_user here"}


def ladder(results: list[dict], method: dict | None, gain_of: dict, samples: int = 1000):
  """(markdown rows, one sentence, whether the text rung reads the history or None): per rung,
  the own-minus-shuffled answer-NLL gain and accuracy differences (official, ranked_all), and
  the first rung where each difference is no longer beyond noise."""
  runs = {"text": next((r for r in results if r["run"] == "aligned" and r.get("align_user") == "text20"), None),
          "oracle": next((r for r in results if r["kind"] == "diagnostic"), None), "encoder": method}
  lines = ["| rung | NLL gain (shuffled − own) | " + " | ".join(f"{v}: own − shuffled" for v in LADDER_VARIANTS) + " |",
           "|---|---|" + "---|" * len(LADDER_VARIANTS)]
  held = {m: [] for m in ("NLL gain",) + LADDER_VARIANTS}  # measure -> [(rung, beyond noise)]
  measured = []
  for rung, label in RUNGS:
    r = runs[rung]
    shuffled = shuffled_of(results, r)
    if r is None or shuffled is None:
      why = f"not in this report ({WHERE[rung]})" if r is None else "its shuffled_user not run"
      lines.append(f"| {label} | {why} | " + " | ".join("—" for _ in LADDER_VARIANTS) + " |")
      continue
    measured.append(rung)
    cells = []
    nll = gain_of.get(r["dir"], {}).get("overall")
    if nll is None:
      cells.append("—")
    else:
      cells.append(f"{nll['gain']:+.4f} [{nll['ci'][0]:+.4f}, {nll['ci'][1]:+.4f}], p={nll['p_value']:.3f}")
      held["NLL gain"].append((rung, nll["ci"][0] > 0 and nll["p_value"] < ALPHA))
    mine, theirs = tables.records_of(r), tables.records_of(shuffled)
    for variant in LADDER_VARIANTS:
      try:
        c = paired.compare(mine, theirs, variant, samples=samples)
      except paired.NothingScored:
        cells.append("—")
        continue
      cells.append(f"{c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f}")
      held[variant].append((rung, beats(c)))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  parts = [f"{measure}: {_where_gone(rungs)}" for measure, rungs in held.items() if rungs]
  said = ("Reading ladder (own vs shuffled user, measured rungs: " + ", ".join(measured) +
          "): " + "; ".join(parts) + "." if parts else
          "Reading ladder: not measured (no text20-aligned, oracle or trained run with its shuffled_user).")
  text = dict(held["NLL gain"]).get("text")
  return lines, said, text


def _where_gone(rungs: list[tuple[str, bool]]) -> str:
  """Where a difference stops being beyond noise along the measured rungs, from the most explicit
  form of the history to the least; a rung that reads less than a later, less explicit one is
  named as such rather than as the place the difference is lost."""
  kept = [rung for rung, ok in rungs if ok]
  if len(kept) == len(rungs):
    return f"beyond noise at every measured rung ({', '.join(kept)})"
  first = next(i for i, (_, ok) in enumerate(rungs) if not ok)
  if not any(ok for _, ok in rungs[first:]):  # a ladder: beyond noise up to a rung, then never again
    return f"gone at {rungs[first][0]}" + (f" (beyond noise before it: {', '.join(kept)})" if kept else "")
  lost = [rung for rung, ok in rungs if not ok]
  return (f"not beyond noise at {', '.join(lost)} but beyond noise at {', '.join(kept)}: a rung reads less than a "
          "less explicit one after it, so no single rung is where it is lost")


def diagnosis(workdir: str, results: list[dict], gains: list[dict], comps=(), changes=None,
              samples: int = 1000) -> tuple[list[str], str]:
  """(markdown table per sub-task, one-paragraph verdict): where user information is lost.

  Columns: the count ceiling and the encoder probe (with its majority answer and shuffled-label
  control) from `workdir/diagnose`, then the trained model, its shuffled_user control and the
  oracle reader (any `oracle_titles` run among the results), with each one's answer-NLL gain.
  """
  path = os.path.join(workdir, "diagnose", workdir_lib.RESULT)
  diag = atomic.read_json(path) if os.path.exists(path) else None
  # The trained model of this workdir (the diagnose columns are this workdir's), not of an included one.
  method = next((r for r in results if r["kind"] == "method" and r["workdir"] == workdir), None)
  shuffled = shuffled_of(results, method)
  oracle = next((r for r in results if r["kind"] == "diagnostic"), None)
  gain_of = {g["method_dir"]: g["cells"] for g in gains if "cells" in g}
  columns = []
  if diag:
    columns += [(name, lambda t, n=run: tables.task_cell(diag["runs"][n]["scores"], t))
                for name, run in (("count ceiling", "ceiling"), ("encoder probe", "probe"),
                                  ("majority answer", "probe_majority"), ("probe, shuffled labels", "probe_shuffled_labels"))]
  floors = [next((r for r in results if method and r["run"] == run and r["workdir"] == method["workdir"]), None)
            for run in ("floor_constant", "floor_first_candidate")]
  for label, r in (("floor: constant", floors[0]), ("floor: first candidate", floors[1]), ("trained", method),
                   ("shuffled_user", shuffled), ("oracle reader", oracle)):
    if r is not None:
      columns.append((label, lambda t, r=r: tables.task_cell(r["scores"], t)))
  nll_cols = [(label, gain_of[r["dir"]]) for label, r in (("trained", method), ("oracle reader", oracle))
              if r is not None and r["dir"] in gain_of]
  changes = changes or {}
  changed_cols = [(label, changes[r["dir"]]) for label, r in (("trained", method), ("oracle reader", oracle))
                  if r is not None and r["dir"] in changes]
  head = [c for c, _ in columns] + [f"NLL gain, {label}" for label, _ in nll_cols] + \
      [f"answers changed, {label}" for label, _ in changed_cols]
  lines = ["| task | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
  for task in schema.TASKS:
    cells = [tables.cell(f(task)) for _, f in columns]
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
    holds["data"], sentence = data_level(ceil, constant, diag.get("ceiling_unanswered") or {})
    said.append(sentence)
    c = diag.get("probe_vs_majority")
    if c:
      held = holds["encoder"] = above(c)
      said.append(f"Encoder: a linear probe of its state {'beats' if held else 'does not beat'} the majority answer "
                  f"beyond noise ({c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f}, "
                  f"on the {c['n']} probed questions whose gold is a train answer).")
    lines += [""] + [f"- {line}" for line in counted(diag)]
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
  if method is not None:  # the answers level is the generated answers' (official); ranked_all said beside it
    versus = {variant: tables.against([c for c in comps if c["method_dir"] == method["dir"] and c["variant"] == variant],
                                      "shuffled_user") for variant in ("official", "ranked_all")}
    versus = {variant: c for variant, c in versus.items() if c is not None and "p_value" in c}
    if "official" in versus:
      holds["answers"] = beats(versus["official"])
    if versus:
      said.append("Against shuffled_user: " + "; ".join(
          f"{variant} {c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f} "
          f"({'beyond' if beats(c) else 'within'} noise)" for variant, c in versus.items()) + ".")
  ladder_lines, ladder_said, holds["text"] = ladder(results, method, gain_of, samples)
  lines += ["", "Reading ladder: the history as text, as oracle soft tokens, as the encoder's soft tokens; each "
            "rung's own user against a shuffled user (paired over users):", "", *ladder_lines]
  said.append(ladder_said)
  said.append(lost_at(holds))
  if method is not None:
    lines = [f"For {method['label']} ({method['workdir']}):", ""] + lines
  return lines, " ".join(said)


def data_level(ceiling: dict, constant: dict | None, unanswered: dict) -> tuple[bool | None, str]:
  """(whether the count reader beats the best constant answer beyond noise, or None: not judged;
  one sentence). Judged only when the reader answers every question: one it cannot read (a
  MovieLens "genre" question, an attribute with several values on a click) counts as wrong in
  its score, which then says nothing about whether the labels are what the history says."""
  answers = "counting the visible clicks answers " + ", ".join(
      f"{t} {100 * ceiling[f'task/{t}']['accuracy']:.0f}%" for t in schema.TASKS if f"task/{t}" in ceiling)
  if unanswered:
    left = ", ".join(f"{t} {n}" for t, n in sorted(unanswered.items()))
    return None, (f"Data: not judged: the count reader cannot read {sum(unanswered.values())} questions ({left}), "
                  f"which its score counts wrong ({answers}).")
  if constant is None or "overall" not in ceiling:
    return None, f"Data: {answers}."
  return ceiling["overall"]["ci"][0] > constant["accuracy"], f"Data: {answers}."


COUNTED = (("ceiling_unanswered", "not answered by the count reader"),
           ("probe_unprobed", "not probed (fewer train questions of their stem than diagnose.probe.min_train)"),
           ("probe_no_known_candidate", "left out of the probe (no listed candidate is a train answer)"),
           ("probe_unseen_answer", "probed, gold never a train answer (no probe can be right)"))


def counted(result: dict) -> list[str]:
  """One line per non-empty count of questions a diagnostic skipped or cannot answer, per task."""
  return [f"{what}: " + ", ".join(f"{t} {n}" for t, n in sorted(result[key].items()))
          for key, what in COUNTED if result.get(key)]


def summary(result: dict) -> list[str]:
  """Per task: the count ceiling, the probe, the majority answer, the shuffled-label probe."""
  cell = lambda run, task: result["runs"][run]["scores"]["official"]["cells"].get(f"task/{task}")
  fmt = lambda c: "—" if c is None else f"{100 * c['accuracy']:.1f} [{100 * c['ci'][0]:.1f}, {100 * c['ci'][1]:.1f}]"
  lines = ["diagnose (official rule, % [95% interval over users]): task | count ceiling | encoder probe | "
           "majority answer | probe on shuffled labels"]
  for task in schema.TASKS:
    row = [fmt(cell(r, task)) for r in RUNS]
    if any(x != "—" for x in row):
      lines.append(f"  {task:3} | " + " | ".join(f"{x:20}" for x in row))
  lines += [f"  {line}" for line in counted(result)]
  if "probe_vs_majority" in result:
    c = result["probe_vs_majority"]
    lines.append(f"  probe minus majority, probed questions whose gold is a train answer: {c['difference']:+.1%} "
                 f"[{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], p={c['p_value']:.3f} (n={c['n']})")
  return lines
