"""Gold answers: the official rule, and the floors any method must beat.

The official rule (UQABench's scorer): a prediction is correct iff `prediction.startswith(gold)`,
no normalisation. An empty gold would make every prediction correct, so it is an error here
(`check_gold`), wherever a gold is read: the data builders, the checker, the pipeline, the scorer.

Floors, per sub-task, from the gold answers alone:
  best constant  the one answer that, given to every question, scores best under the rule
                 (under `startswith` a constant is credited for every gold that is a prefix of
                 it, so "15" scores on gold "1" as well as on "15");
  first candidate  always picking the first listed candidate (IP, AP: where candidates exist).
The stricter verdicts, bootstrap intervals and comparisons are `uqa_jax/evaluation/scoring.py`.
"""

import collections
from typing import Iterable, Sequence

TOP_ANSWERS = 10  # how many of the most frequent answers an answer histogram keeps


def check_gold(gold: str, where: str = "") -> None:
  if not isinstance(gold, str) or not gold.strip():
    raise ValueError(f"{where + ': ' if where else ''}empty gold answer {gold!r}: "
                     f"under `startswith` every prediction would count as correct")


def is_correct(prediction: str, gold: str) -> bool:
  """The official rule."""
  check_gold(gold)
  return prediction.startswith(gold)


def best_constant(golds: Sequence[str]) -> tuple[str, float]:
  """(answer, accuracy) of the best single answer under the official rule.

  A constant c scores on every gold that is a prefix of c; the best c is always one of the
  golds (extending c past its longest matched gold gains nothing).
  """
  if not golds:
    return "", 0.0
  counts = collections.Counter(golds)
  for g in counts:
    check_gold(g)
  score = {g: sum(counts.get(g[:n], 0) for n in range(1, len(g) + 1)) for g in counts}
  answer = max(score, key=lambda g: (score[g], counts[g], g))
  return answer, score[answer] / len(golds)


def first_candidate(golds: Sequence[str], candidates: Sequence[Sequence[str]]) -> float | None:
  """Accuracy of always answering the first candidate; None when no question lists any."""
  pairs = [(g, c) for g, c in zip(golds, candidates) if c]
  if not pairs:
    return None
  return sum(is_correct(c[0], g) for g, c in pairs) / len(pairs)


def answer_report(items: Iterable[tuple[str, str, Sequence[str]]]) -> dict[str, dict]:
  """Per task: count, distinct answers, the most frequent answers, and the floors.

  `items`: (task, gold, candidates) triples.
  """
  by_task = collections.defaultdict(list)
  for task, gold, cands in items:
    by_task[task].append((gold, tuple(cands)))
  out = {}
  for task, rows in by_task.items():
    golds = [g for g, _ in rows]
    hist = collections.Counter(golds)
    constant, constant_acc = best_constant(golds)
    exact, exact_n = hist.most_common(1)[0]
    out[task] = {
        "n": len(golds), "distinct_answers": len(hist),
        "top_answers": [[a, n] for a, n in hist.most_common(TOP_ANSWERS)],
        "best_constant": constant, "best_constant_accuracy": constant_acc,
        "best_constant_exact": exact, "best_constant_exact_accuracy": exact_n / len(golds),
        "first_candidate_accuracy": first_candidate(golds, [c for _, c in rows]),
    }
  return out


def format_floors(report: dict[str, dict], tasks: Sequence[str], top: int = 3) -> list[str]:
  """One line per task: the floors and the head of the answer histogram (`top` answers)."""
  lines = [f"{'task':4} {'n':>6} {'distinct':>8}  {'best constant (official rule)':>36}  "
           f"{'first cand.':>11}  most frequent answers"]
  for task in tasks:
    r = report.get(task)
    if r is None:
      continue
    first = r["first_candidate_accuracy"]
    head = ", ".join(f"{_clip(a, 20)} {n / r['n']:.1%}" for a, n in r["top_answers"][:top])
    lines.append(f"{task:4} {r['n']:>6,} {r['distinct_answers']:>8,}  "
                 f"{r['best_constant_accuracy']:>6.1%} {_clip(r['best_constant']):>29}  "
                 f"{'-' if first is None else format(first, '.1%'):>11}  {head}")
  return lines


def _clip(text: str, width: int = 28) -> str:
  text = repr(text)
  return text if len(text) <= width else text[:width - 3] + "...'"
