"""Two runs on the same questions, paired question by question: accuracy differences, answers
changed, and the answer log-likelihood gain, each with a paired bootstrap over users.

`pairs` matches the records of two runs by question (and user); `compare` is the accuracy
difference under a variant, `changed_answers` how many answers differ and which side is right,
`compare_nll` the gain in the gold answer's NLL per token (the diagnostic more sensitive than
accuracy). Verdicts and single-run scores are `scoring.py`.
"""

import collections
from typing import Sequence

import numpy as np

from uqa_jax.evaluation import bootstrap
from uqa_jax.evaluation import scoring
from uqa_jax.runtime import errors


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
  if scoring.by_users(records_a, f"{what}, first run: ") != scoring.by_users(records_b, f"{what}, second run: "):
    raise ValueError(f"{what}: one run names each record's user and the other none: they cannot be paired")
  keys_a, keys_b = question_keys(records_a), question_keys(records_b)
  if set(keys_a) != set(keys_b):
    raise ValueError(f"{what}: the runs hold different questions ({len(set(keys_a) - set(keys_b))} only in the "
                     f"first, {len(set(keys_b) - set(keys_a))} only in the second)")
  b_of = dict(zip(keys_b, records_b))
  return [(key, ra, b_of[key]) for key, ra in zip(keys_a, records_a)]


def compare(records_a: Sequence[dict], records_b: Sequence[dict], variant: str = "official", *,
            samples: int = scoring.BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
  """Paired bootstrap of accuracy(a) - accuracy(b) over the questions both runs scored.

  The runs must hold the same questions (by user, question and occurrence); the pairs are
  resampled by user, as in `score_records`.
  """
  units, unit_of, correct_a, correct_b = {}, [], [], []
  ranked = lambda records: any("ranked_all_candidates" in r for r in records)
  both_ranked = variant == "ranked_all" and ranked(records_a) and ranked(records_b)  # then every question alike
  for n, (key, ra, rb) in enumerate(pairs(records_a, records_b, "compare")):
    va, vb = scoring.judge(ra, variant, f"record {n + 1}"), scoring.judge(rb, variant, f"record {n + 1}")
    if both_ranked and (va is None) != (vb is None):
      raise ValueError(f"compare: record {n + 1} ({key[1][:60]!r}) was ranked in one run only; ranked_all compares "
                       "runs on one candidate set per question")
    if va is None or vb is None:
      continue
    if variant == "ranked_all" and sorted(ra["ranked_all_candidates"]) != sorted(rb["ranked_all_candidates"]):
      raise ValueError(f"compare: record {n + 1} ({key[1][:60]!r}) was ranked among other candidates in each run; "
                       "ranked_all compares runs on one candidate set (same data, evaluate.candidates and seed)")
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
    right_own, right_other = scoring.judge(mine, "official", where), scoring.judge(theirs, "official", where)
    for cell in (f"task/{scoring.task_of_record(mine, where)}", "overall"):
      c = cells[cell]
      c["n"] += 1
      c["changed"] += mine["prediction"] != theirs["prediction"]
      c["own_only"] += right_own and not right_other
      c["other_only"] += right_other and not right_own
  return dict(cells)


class NothingScored(errors.Refused, ValueError):
  """Two runs with no question scored under a variant by both (e.g. ranked against a floor)."""


class MissingLikelihood(errors.Refused, ValueError):
  """A record without `answer_nll`: the run did not score the gold's likelihood."""


def compare_nll(records_own: Sequence[dict], records_other: Sequence[dict], *,
                samples: int = scoring.BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
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
    tasks.append(scoring.task_of_record(ra, f"record {n + 1}"))
  if not unit_of:
    raise ValueError("compare_nll: no records")
  unit_N, u = np.asarray(unit_of), len(units)
  own_N, other_N = np.asarray(own), np.asarray(other)
  weights_SxU = bootstrap.draws(u, samples, seed)
  out = {}
  for name, m in scoring.cells(np.asarray(tasks)).items():
    sums = lambda x: np.bincount(unit_N[m], weights=x[m], minlength=u)
    paired = bootstrap.paired(weights_SxU, sums(other_N), sums(own_N), sums(np.ones(len(tasks))))
    out[name] = {"n": int(m.sum()), "own": float(own_N[m].mean()), "other": float(other_N[m].mean()),
                 "gain": paired["difference"], "ci": paired["ci"], "p_value": paired["p_value"]}
  return out
