"""Scoring QA answers: the official rule, two stricter variants, and the floors to beat.

Variants (`VARIANTS`), each a verdict per JSONL record in the official output format
(`question`, `prediction`, `answer`; ours add `task`, `user`, `ranked_prediction`):
  official  UQABench's scorer exactly: correct iff `prediction.startswith(gold)`, no
            normalisation; a list gold is scored by its first element. An empty gold would
            make every prediction correct, so it is an error here, never a point.
  strict    both sides normalised (Unicode NFKC, which folds full-width to half-width; case
            folded; whitespace runs collapsed, and dropped next to punctuation; opening
            quotes/brackets cut from the start, punctuation from the end), then equal: "15"
            is not credited for gold "1", nor a sentence that merely begins with the gold.
            A gold that is only punctuation is an error.
  ranked    for questions that list candidates: the candidate the model gives the highest
            length-normalised log-likelihood (`ranked_prediction`, written by the evaluate
            stage) must equal the gold. Knowledge without format failures; records without a
            ranked prediction are not scored under it.
A record's task is its `task` field, or else the official substring rule (`schema.TASK_RULES`,
`zh`, first match in the official order). Groups are micro-averages over their questions
(`schema.GROUPS`), and so is `overall`. Every accuracy carries a 95% bootstrap interval that
resamples users (the `user` field; without it, each record is its own unit: `bootstrap.py`).
The official rule itself and the floors (best constant answer, first candidate) are in
`uqa_jax/data/answers.py`: the data stage reports them when it builds a data set.
"""

import collections
import json
import re
import unicodedata
from typing import Sequence

import numpy as np

from uqa_jax.data import answers
from uqa_jax.data import schema
from uqa_jax.evaluation import bootstrap
from uqa_jax.runtime import atomic

VARIANTS = ("official", "strict", "ranked")
BOOTSTRAP_SAMPLES = 1000

def normalise(text: str) -> str:
  """What `strict` compares: NFKC (full-width -> half-width), case-folded, whitespace runs
  collapsed and dropped next to punctuation ("A、 B" = "A、B", "a -> b" = "a->b"), opening
  quotes/brackets cut from the start and punctuation from the end."""
  text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
  text = re.sub(r" (?=[^\w\s])|(?<=[^\w\s]) ", "", text)  # no space next to punctuation or a symbol
  while text and (unicodedata.category(text[0]) in ("Ps", "Pi") or text[0] in "\"'"):
    text = text[1:]
  while text and unicodedata.category(text[-1]).startswith("P"):
    text = text[:-1].rstrip()
  return text


def is_correct_strict(prediction: str, gold: str) -> bool:
  answers.check_gold(gold)
  if not normalise(gold):
    raise ValueError(f"gold answer {gold!r} is only punctuation: under `strict` it would match an empty prediction")
  return normalise(prediction) == normalise(gold)


def gold_of(answer, where: str = "") -> str:
  """The gold string of a record's `answer`: itself, or its first element when it is a list."""
  if isinstance(answer, list):
    if not answer:
      raise ValueError(f"{where}: `answer` is an empty list")
    answer = answer[0]
  answers.check_gold(answer, where)
  return answer


def task_of_record(record: dict, where: str = "") -> str:
  """Its `task` field, else the official substring rule on its question; never a default."""
  task = record.get("task")
  if task is not None:
    if task not in schema.TASKS:
      raise ValueError(f"{where}: unknown task {task!r}; expected one of {', '.join(schema.TASKS)}")
    return task
  task = schema.classify_question(record.get("question", ""), "zh")
  if task is None:
    raise ValueError(f"{where}: no `task` field and the official rule classifies no task from the "
                     f"question {record.get('question', '')[:60]!r}")
  return task


def judge(record: dict, variant: str, where: str = "") -> bool | None:
  """The verdict on one record under `variant`; None when the variant does not score it."""
  gold = gold_of(record.get("answer"), where)
  if variant == "ranked":
    ranked = record.get("ranked_prediction")
    return None if ranked is None else ranked == gold
  prediction = record.get("prediction")
  if not isinstance(prediction, str):
    raise ValueError(f"{where}: `prediction` is {prediction!r}; expected a string")
  if variant == "official":
    return answers.is_correct(prediction, gold)
  if variant == "strict":
    return is_correct_strict(prediction, gold)
  raise ValueError(f"unknown scoring variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def write_jsonl(path: str, records: list[dict]) -> None:
  atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file; a line that is not a JSON object is an error naming it."""
  records = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(record).__name__}")
      records.append(record)
  if not records:
    raise ValueError(f"{path}: no records")
  return records


def by_users(records, where: str = "") -> bool:
  """Whether the bootstrap resamples users (every record names one) or records (none does); a mix
  is an error: it would silently treat the unnamed records as users of their own."""
  with_user = sum("user" in r for r in records)
  if 0 < with_user < len(records):
    raise ValueError(f"{where}{len(records) - with_user} of {len(records)} records have no `user` field: the "
                     "bootstrap resamples users when every record names one, records when none does")
  return with_user == len(records)


def _verdicts(records, variant, where):
  """(unit index [N], unit names, task [N], correct [N]) of the records the variant scores."""
  use_users = by_users(records, where)
  units, unit_of, tasks, correct = {}, [], [], []
  for n, r in enumerate(records):
    at = f"{where}record {n + 1}"
    verdict = judge(r, variant, at)
    if verdict is None:
      continue
    key = str(r["user"]) if use_users else n
    unit_of.append(units.setdefault(key, len(units)))
    tasks.append(task_of_record(r, at))
    correct.append(verdict)
  return np.asarray(unit_of, np.int64), list(units), np.asarray(tasks), np.asarray(correct, np.float64), use_users


def _cells(tasks_N):
  cells = {f"task/{t}": (tasks_N == t) for t in schema.TASKS}
  cells.update({f"group/{g}": np.isin(tasks_N, members) for g, members in schema.GROUPS.items()})
  cells["overall"] = np.ones(tasks_N.shape, bool)
  return {k: v for k, v in cells.items() if v.any()}


def score_records(records: Sequence[dict], variant: str = "official", *, samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = 0, where: str = "") -> dict:
  """Accuracy per task, group and overall with bootstrap intervals; see the module docstring.

  -> {"variant", "units" ("users" | "records"), "num_units", "scored", "empty_predictions",
      "cells": {"task/DF" | "group/<name>" | "overall": {"n", "correct", "accuracy", "ci"}}}
  """
  unit_N, units, tasks_N, correct_N, by_user = _verdicts(records, variant, where)
  out = {"variant": variant, "units": "users" if by_user else "records", "num_units": len(units),
         "scored": int(correct_N.size), "empty_predictions": sum(1 for r in records if not str(r.get("prediction", "")).strip()),
         "cells": {}}
  if not correct_N.size:
    return out
  weights = bootstrap.draws(len(units), samples, seed)
  for name, in_cell in _cells(tasks_N).items():
    count_U = np.bincount(unit_N[in_cell], minlength=len(units)).astype(np.float64)
    correct_U = np.bincount(unit_N[in_cell], weights=correct_N[in_cell], minlength=len(units))
    lo, hi = bootstrap.interval(weights, correct_U, count_U)
    out["cells"][name] = {"n": int(count_U.sum()), "correct": int(correct_U.sum()),
                          "accuracy": float(correct_U.sum() / count_U.sum()), "ci": [lo, hi]}
  return out


def question_keys(records):
  """(user, question, occurrence) per record: what pairs the same question across two runs."""
  seen = collections.Counter()
  out = []
  for r in records:
    key = (str(r.get("user", "")), r.get("question", ""))
    out.append(key + (seen[key],))
    seen[key] += 1
  return out


def pairs(records_a: Sequence[dict], records_b: Sequence[dict], what: str) -> list[tuple[tuple, dict, dict]]:
  """(key, record of a, record of b) per question of a, in a's order; the runs must hold the
  same questions (by user, question and occurrence), else an error naming `what` and the counts."""
  if by_users(records_a, f"{what}, first run: ") != by_users(records_b, f"{what}, second run: "):
    raise ValueError(f"{what}: one run names each record's user and the other none: they cannot be paired")
  keys_a, keys_b = question_keys(records_a), question_keys(records_b)
  if set(keys_a) != set(keys_b):
    raise ValueError(f"{what}: the runs hold different questions ({len(set(keys_a) - set(keys_b))} only in the "
                     f"first, {len(set(keys_b) - set(keys_a))} only in the second)")
  b_of = dict(zip(keys_b, records_b))
  return [(key, ra, b_of[key]) for key, ra in zip(keys_a, records_a)]


def compare(records_a: Sequence[dict], records_b: Sequence[dict], variant: str = "official", *,
            samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
  """Paired bootstrap of accuracy(a) - accuracy(b) over the questions both runs scored.

  The runs must hold the same questions (by user, question and occurrence); the pairs are
  resampled by user, as in `score_records`.
  """
  units, unit_of, correct_a, correct_b = {}, [], [], []
  for n, (key, ra, rb) in enumerate(pairs(records_a, records_b, "compare")):
    va, vb = judge(ra, variant, f"record {n + 1}"), judge(rb, variant, f"record {n + 1}")
    if va is None or vb is None:
      continue
    unit_of.append(units.setdefault(key[0] if key[0] else n, len(units)))
    correct_a.append(va)
    correct_b.append(vb)
  if not unit_of:
    raise NothingScored(f"compare: no question is scored under {variant!r} in both runs")
  unit_N, u = np.asarray(unit_of), len(units)
  sums = lambda w: np.bincount(unit_N, weights=np.asarray(w, np.float64), minlength=u)
  out = bootstrap.paired(bootstrap.draws(u, samples, seed), sums(correct_a), sums(correct_b), sums(np.ones(len(unit_N))))
  return {"variant": variant, "n": len(unit_N), **out}


def changed_answers(records_own: Sequence[dict], records_other: Sequence[dict]) -> dict:
  """{cell: {"n", "changed", "own_only", "other_only"}} per task and overall: how many questions
  get a different generated answer with the other prompt, and (official rule) how many are
  right with one prompt only — the discordant pairs an accuracy difference is made of. Says
  whether the LLM ignores the soft prompt (nothing changes) or reads it wrongly (answers change
  but not toward the gold)."""
  cells = collections.defaultdict(lambda: {"n": 0, "changed": 0, "own_only": 0, "other_only": 0})
  for n, (_, mine, theirs) in enumerate(pairs(records_own, records_other, "changed_answers")):
    where = f"record {n + 1}"
    right_own, right_other = judge(mine, "official", where), judge(theirs, "official", where)
    for cell in (f"task/{task_of_record(mine, where)}", "overall"):
      c = cells[cell]
      c["n"] += 1
      c["changed"] += mine["prediction"] != theirs["prediction"]
      c["own_only"] += right_own and not right_other
      c["other_only"] += right_other and not right_own
  return dict(cells)


class NothingScored(ValueError):
  """Two runs with no question scored under a variant by both (e.g. ranked against a floor)."""


class MissingLikelihood(ValueError):
  """A record without `answer_nll`: the run did not score the gold's likelihood."""


def compare_nll(records_own: Sequence[dict], records_other: Sequence[dict], *,
                samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
  """The answer log-likelihood diagnostic: per question, the gold answer's NLL per token
  (`answer_nll`) under another prompt minus under the own-user prompt, paired, per task and
  overall -> {cell: {n, own, other, gain, ci, p_value}}. A gain above zero means the own
  user's prompt makes the gold more likely; users are resampled as in `score_records`.

  Both runs must hold the same questions, each with a finite `answer_nll`.
  """
  units, unit_of, own, other, tasks = {}, [], [], [], []
  for n, (key, ra, rb) in enumerate(pairs(records_own, records_other, "compare_nll")):
    pair = []
    for which, r in (("first", ra), ("second", rb)):
      value = r.get("answer_nll")
      if value is None:
        raise MissingLikelihood(f"compare_nll: record {n + 1} ({which} run) has no answer_nll (written with "
                                f"evaluate.answer_nll=False, or before it existed)")
      if not isinstance(value, (int, float)) or not np.isfinite(value):
        raise FloatingPointError(f"compare_nll: record {n + 1} ({which} run) has answer_nll {value!r}; "
                                 "expected a finite number")
      pair.append(float(value))
    unit_of.append(units.setdefault(key[0] if key[0] else n, len(units)))
    own.append(pair[0])
    other.append(pair[1])
    tasks.append(task_of_record(ra, f"record {n + 1}"))
  if not unit_of:
    raise ValueError("compare_nll: no records")
  unit_N, u = np.asarray(unit_of), len(units)
  own_N, other_N = np.asarray(own), np.asarray(other)
  weights_SxU = bootstrap.draws(u, samples, seed)
  out = {}
  for name, m in _cells(np.asarray(tasks)).items():
    sums = lambda x: np.bincount(unit_N[m], weights=x[m], minlength=u)
    paired = bootstrap.paired(weights_SxU, sums(other_N), sums(own_N), sums(np.ones(len(tasks))))
    out[name] = {"n": int(m.sum()), "own": float(own_N[m].mean()), "other": float(other_N[m].mean()),
                 "gain": paired["difference"], "ci": paired["ci"], "p_value": paired["p_value"]}
  return out


def format_score(score: dict) -> list[str]:
  """One line per cell: accuracy, 95% interval, correct / n."""
  lines = [f"{score['variant']}: {score['scored']} records scored, 95% bootstrap intervals over "
           f"{score['num_units']} {score['units']}; {score['empty_predictions']} empty predictions"]
  for name, c in score["cells"].items():
    lines.append(f"  {name:32} {c['accuracy']:6.1%}  [{c['ci'][0]:6.1%}, {c['ci'][1]:6.1%}]  "
                 f"{c['correct']:>6}/{c['n']}")
  return lines
