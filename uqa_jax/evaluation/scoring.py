"""Scoring QA answers: the official rule and two stricter variants, per task, group and overall.

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
  ranked_all every question with a candidate set (`ranked_all_candidates`: the gold and other
            users' golds of its template, drawn by frequency, `evaluation/candidates.py`; IP
            and AP keep their listed ones): the most likely candidate
            (`ranked_all_prediction`) must equal the gold. Each cell also carries `chance`,
            the mean of 1 / K over its questions. A set without the gold, or a prediction
            outside it, is an error.
A record with `scored_under` (a floor that writes no answer, e.g. the train prior) is scored by
those variants only.
A record's task is its `task` field, or else the official substring rule (`schema.TASK_RULES`,
`zh`, first match in the official order). Groups are micro-averages over their questions
(`schema.GROUPS`), and so is `overall`. Every accuracy carries a 95% bootstrap interval that
resamples users (the `user` field; without it, each record is its own unit: `bootstrap.py`).
The official rule itself and the floors (best constant answer, first candidate) are in
`uqa_jax/data/answers.py`: the data stage reports them when it builds a data set.
"""

import json
import re
import unicodedata
from typing import Sequence

import numpy as np

from uqa_jax.data import answers
from uqa_jax.data import schema
from uqa_jax.evaluation import bootstrap
from uqa_jax.runtime import atomic

VARIANTS = ("official", "strict", "ranked", "ranked_all")
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
  if variant not in VARIANTS:
    raise ValueError(f"unknown scoring variant {variant!r}; expected one of {', '.join(VARIANTS)}")
  if "scored_under" in record and variant not in record["scored_under"]:
    return None
  if variant == "ranked_all":
    return _judge_ranked_all(record, gold, where)
  if variant == "ranked":
    ranked = record.get("ranked_prediction")
    return None if ranked is None else ranked == gold
  prediction = record.get("prediction")
  if not isinstance(prediction, str):
    raise ValueError(f"{where}: `prediction` is {prediction!r}; expected a string")
  if variant == "official":
    return answers.is_correct(prediction, gold)
  return is_correct_strict(prediction, gold)


def _judge_ranked_all(record: dict, gold: str, where: str) -> bool | None:
  candidates, picked = record.get("ranked_all_candidates"), record.get("ranked_all_prediction")
  if candidates is None and picked is None:
    return None
  if not isinstance(candidates, list) or len(candidates) < 2 or gold not in candidates:
    raise ValueError(f"{where}: `ranked_all_candidates` {candidates!r} must list at least 2 answers, the gold "
                     f"{gold!r} among them")
  if picked not in candidates:
    raise ValueError(f"{where}: `ranked_all_prediction` {picked!r} is not among its candidates")
  return picked == gold


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
  """(unit index [N], unit names, task [N], correct [N], by user, chance [N]) of the records the
  variant scores (chance: 1 / K under ranked_all, else NaN)."""
  use_users = by_users(records, where)
  units, unit_of, tasks, correct, chance = {}, [], [], [], []
  for n, r in enumerate(records):
    at = f"{where}record {n + 1}"
    verdict = judge(r, variant, at)
    if verdict is None:
      continue
    key = str(r["user"]) if use_users else n
    unit_of.append(units.setdefault(key, len(units)))
    tasks.append(task_of_record(r, at))
    correct.append(verdict)
    chance.append(1.0 / len(r["ranked_all_candidates"]) if variant == "ranked_all" else np.nan)
  return (np.asarray(unit_of, np.int64), list(units), np.asarray(tasks), np.asarray(correct, np.float64), use_users,
          np.asarray(chance, np.float64))


def cells(tasks_N):
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
  unit_N, units, tasks_N, correct_N, by_user, chance_N = _verdicts(records, variant, where)
  out = {"variant": variant, "units": "users" if by_user else "records", "num_units": len(units),
         "scored": int(correct_N.size),
         "empty_predictions": sum(1 for r in records if "prediction" in r and not str(r["prediction"]).strip()),
         "cells": {}}
  if not correct_N.size:
    return out
  weights = bootstrap.draws(len(units), samples, seed)
  for name, in_cell in cells(tasks_N).items():
    count_U = np.bincount(unit_N[in_cell], minlength=len(units)).astype(np.float64)
    correct_U = np.bincount(unit_N[in_cell], weights=correct_N[in_cell], minlength=len(units))
    lo, hi = bootstrap.interval(weights, correct_U, count_U)
    out["cells"][name] = {"n": int(count_U.sum()), "correct": int(correct_U.sum()),
                          "accuracy": float(correct_U.sum() / count_U.sum()), "ci": [lo, hi]}
    if variant == "ranked_all":
      out["cells"][name]["chance"] = float(chance_N[in_cell].mean())
  return out


def format_score(score: dict) -> list[str]:
  """One line per cell: accuracy, 95% interval, correct / n."""
  lines = [f"{score['variant']}: {score['scored']} records scored, 95% bootstrap intervals over "
           f"{score['num_units']} {score['units']}; {score['empty_predictions']} empty predictions"]
  for name, c in score["cells"].items():
    lines.append(f"  {name:32} {c['accuracy']:6.1%}  [{c['ci'][0]:6.1%}, {c['ci'][1]:6.1%}]  "
                 f"{c['correct']:>6}/{c['n']}")
  return lines
