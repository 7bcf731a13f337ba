"""`ranked_all`: one candidate set per question, drawn once and scored for every run alike.

A question gets `k` candidates: its gold and k - 1 distractors drawn without replacement from
the golds of the other questions of its sub-task, template and form (`group_of`: as many list
items as the gold) in the same file, each with the
probability of how often it occurs there, never one of the asking user's own golds of that
template and never the gold again. A frequent gold is then a frequent distractor too, so
picking the most frequent candidate gains little: a gold that answers a share s of a template's
questions is in each of their sets, so no design keeps that prior below s, and these draws put
it near max(1/K, s) (uniform draws over the distinct golds let it far above:
tests/unit/evaluation/test_candidates.py). Questions that list candidates (IP, AP) keep them. The
draw is seeded per question (the seed and the question's row; the pool it draws from is the
questions asked), and the candidates are put in a seeded order. A template is the
question with its numbers and quoted values masked (`template_of`): "item number 3" and "item
number 7" share one, "category" and "brand" do not. Nothing here reads our generator's
structure: the official files work the same way.

Known limit: a value that itself holds a list separator (MovieLens titles such as "Usual
Suspects, The (1995)") counts as more items, so on such data a "last k titles" question can be
offered distractors of another k, which the question alone rules out; the synthetic data's
titles hold none.

Floors beside the score: chance (the mean of 1 / K over the questions) and the prior: the
candidate whose value is most frequent among the align-train golds of the same sub-task and
template (`prior_choice`; the eval golds would credit the gold with its own occurrence).
"""

import collections
import re
from typing import Iterable, Sequence

import numpy as np

from uqa_jax.data import qa

DEFAULT_K = 10
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|「[^」]*」")  # not '…': the apostrophe of "user's" would open one
_NUMBER = re.compile(r"\d+")


def template_of(question: str) -> str:
  """The question with quoted values and numbers masked, and a listed candidate set cut off
  (IP, AP): what its sub-task's template asks."""
  for marker in qa.CANDIDATE_MARKERS.values():
    if marker in question:
      question = question[:question.index(marker)]
  return _NUMBER.sub("#", _QUOTED.sub("«»", question))


# what joins the items of a list answer (DF's titles, LI's top 3, IT's path), in both languages
SEPARATORS = tuple(dict.fromkeys([t["list_sep"] for t in qa.TEMPLATES.values()] + [qa.TRAJECTORY_SEP]))


def form_of(answer: str) -> tuple[int, ...]:
  """How many items of each list kind an answer joins: a distractor has its gold's form, so "the
  last 3 titles" is never answered by 1 title (which the question alone would rule out)."""
  return tuple(answer.count(sep) for sep in SEPARATORS)


def group_of(task: str, question: str, answer: str) -> tuple:
  """Where an answer's distractors come from: the same sub-task, template and form."""
  return task, template_of(question), form_of(answer)


def draw(questions: Sequence, k: int = DEFAULT_K, seed: int = 0) -> list[tuple[str, ...]]:
  """Candidates per question (in order); () for a question whose template holds no other
  user's gold (it is not scored). `questions`: objects with `row`, `user`, `task`, `question`,
  `answer` and `candidates` (the listed ones, or ())."""
  if k < 2:
    raise ValueError(f"ranked_all needs at least 2 candidates per question, got k={k}")
  golds = collections.defaultdict(collections.Counter)  # group -> gold -> questions
  own = collections.defaultdict(set)  # (group, user) -> that user's golds
  for q in questions:
    g = group_of(q.task, q.question, q.answer)
    golds[g][q.answer] += 1
    own[g, q.user].add(q.answer)
  out = []
  for q in questions:
    if q.candidates:
      if q.answer not in q.candidates:
        raise ValueError(f"row {q.row}: the gold {q.answer!r} is not among its listed candidates {list(q.candidates)}")
      out.append(tuple(q.candidates))
      continue
    g = group_of(q.task, q.question, q.answer)
    pool = sorted(v for v in golds[g] if v not in own[g, q.user])  # the gold is one of the user's own
    rng = np.random.default_rng([seed, q.row])
    if not pool:  # no other user's gold to set beside it: not scored (a lone gold would be a free point)
      out.append(())
      continue
    weights = np.array([golds[g][v] for v in pool], np.float64)
    at = rng.choice(len(pool), size=min(k - 1, len(pool)), replace=False, p=weights / weights.sum())
    candidates = [q.answer, *(pool[i] for i in at)]
    out.append(tuple(candidates[i] for i in rng.permutation(len(candidates))))
  return out


def most_likely(nll: dict) -> str:
  """The candidate with the lowest NLL per answer token; a tie goes to the first in sorted
  order, so the pick does not depend on the order the candidates are listed in."""
  return min(nll, key=lambda c: (nll[c], c))


def train_counts(golds: Iterable[tuple[str, str, str]]) -> dict:
  """{(task, template, form): Counter of gold answers} from (task, question, answer) triples."""
  counts = collections.defaultdict(collections.Counter)
  for task, question, answer in golds:
    counts[group_of(task, question, answer)][answer] += 1
  return counts


def prior_choice(task: str, question: str, candidates: Sequence[str], counts: dict) -> str:
  """The candidate most frequent among the train golds of the question's group; ties (zero
  counts included) go to the first in sorted order, so the choice ignores the listing order."""
  seen = lambda c: counts.get(group_of(task, question, c), {}).get(c, 0)
  return min(candidates, key=lambda c: (-seen(c), c))


def summary(sets: Sequence[tuple[str, ...]], k: int) -> dict:
  """How many candidates the questions got: fewer than `k` when a template has few golds, none
  (not scored) when it has no other user's."""
  sizes = np.array([len(s) for s in sets if s])
  return {"k": k, "questions": len(sets), "not_scored": len(sets) - int(sizes.size),
          "fewer_than_k": int((sizes < k).sum()), "min": int(sizes.min()) if sizes.size else 0}
