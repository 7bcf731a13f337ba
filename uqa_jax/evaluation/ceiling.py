"""The count ceiling: what a reader that only counts the clicks it is shown gets right.

For each align-eval question this reader decodes the history's text features (the side names
and titles the encoder reads, not the generator's hidden plan) and answers by counting:
  SI  the attribute value most clicked in the last `qa.SHORT_WINDOW` clicks
  LI  the three most clicked values, most first
  IT  the most clicked value in each of `qa.TRAJECTORY_PARTS` consecutive parts, repeats merged
  AP  the listed value most clicked in the last window (then in the whole history)
  IP  the listed title scoring most on the last window: 2 per click on that very title, 1 per
      click whose brand, and 1 per click whose category, appears in the title
(ties: the more recent last click, then the name; for AP/IP the first listed). SI, LI and IT are
functions of the visible history, so 100% here checks the data (a lower figure means the
labels were not computed from what the model sees); IP and AP predict the next click, so their
figure measures how much of the planted structure a simple count recovers — the ceiling to
read a trained model's score against, next to the floors. DF and MF are lookups and counts the
question names, read off its template (`qa.TEMPLATES`):
  DF  the titles of the last k clicks in order; the value of click n (counting from 1)
  MF  the number of clicks; the number of clicks carrying the quoted value
so they too must be 100% (a question whose template is not recognised is counted as
unanswered). The attribute a question asks about is found
from its words (`ATTR_WORDS`: the synthetic templates' English words and the official Chinese
ones); a question naming none (MovieLens' "genre", "decade"), and any question about an
attribute with several values on some click (a decoded bag would run the names together), is
not answered and is counted, per task, as unanswered.
"""

import collections
import re
import string

import numpy as np

from uqa_jax.data import qa
from uqa_jax.evaluation import probe as probe_lib

ATTR_WORDS = {"cate": ("categor", "类目"), "brand": ("brand", "品牌"), "shop": ("shop", "店铺")}
TASKS = ("DF", "MF", "IP", "AP", "LI", "SI", "IT")
NUMBER_FIELDS = ("k", "n")  # template fields that hold a count from 1; the others hold text
TITLES = "uni_seq_title_bpe_token_ids"


def column(attr: str) -> str:
  return f"uni_seq_{attr}_bpe_token_ids"


def attr_of(question: str, language: str) -> str | None:
  """The one attribute whose word the question's stem names (None: none or several)."""
  text = probe_lib.stem(question, language).casefold()
  found = [a for a, words in ATTR_WORDS.items() if any(w in text for w in words)]
  return found[0] if len(found) == 1 else None


class History:
  """One row's clicks as decoded names per attribute and titles, oldest first."""

  def __init__(self, row: dict, tokenizer):
    self._row, self._tokenizer, self._cache = row, tokenizer, {}

  def single_valued(self, attr: str) -> bool:
    """Every click carries at most one value of `attr` (its id bags)."""
    bags = self._row[f"uni_seq_{attr}_id"]
    return all(bags.bag(t).size <= 1 for t in range(bags.num_steps))

  def names(self, col: str) -> list[str]:
    if col not in self._cache:
      bags = self._row[col]
      self._cache[col] = [self._tokenizer.decode(bags.bag(t).tolist()) for t in range(bags.num_steps)]
    return self._cache[col]


def fields(template: str, question: str) -> dict | None:
  """The values of `template`'s {fields} in `question` (numbers as int), or None if it does not match."""
  pattern, names = "", []
  for literal, name, _, _ in string.Formatter().parse(template):
    pattern += re.escape(literal)
    if name is not None:
      pattern += r"(\d+)" if name in NUMBER_FIELDS else "(.+?)"
      names.append(name)
  m = re.fullmatch(pattern, question.strip())
  if m is None:
    return None
  return {k: int(v) if k in NUMBER_FIELDS else v for k, v in zip(names, m.groups())}


def lookup(task: str, question: str, h: History, language: str) -> str | None:
  """DF and MF: the lookup or count the question names, or None (template or attribute unknown)."""
  t = qa.TEMPLATES[language]
  steps = len(h.names(TITLES))
  if task == "MF" and fields(t["MF_length"], question) is not None:
    return str(steps)
  if task == "DF" and (f := fields(t["DF_last"], question)) is not None:
    return t["list_sep"].join(h.names(TITLES)[-f["k"]:]) if 1 <= f["k"] <= steps else None
  attr = attr_of(question, language)
  if attr is None or not h.single_valued(attr):
    return None
  names = h.names(column(attr))
  if task == "DF" and (f := fields(t["DF_nth"], question)) is not None:
    return names[f["n"] - 1] if 1 <= f["n"] <= steps else None
  if task == "MF" and (f := fields(t["MF_count"], question)) is not None:
    return str(names.count(f["value"]))
  return None


def ranked(names: list[str]) -> list[str]:
  """Distinct non-empty names by count, then the more recent last click, then name."""
  count, last = collections.Counter(), {}
  for t, n in enumerate(names):
    if n:
      count[n] += 1
      last[n] = t
  return sorted(count, key=lambda n: (-count[n], -last[n], n))


def answer(task: str, question: str, candidates: tuple, h: History, language: str) -> str | None:
  """The count reader's answer, or None where it does not answer (an unknown template or attribute)."""
  t = qa.TEMPLATES[language]
  if task in ("DF", "MF"):
    return lookup(task, question, h, language)
  if task == "IP":
    if not candidates or not (h.single_valued("brand") and h.single_valued("cate")):
      return None
    titles = h.names(TITLES)[-qa.SHORT_WINDOW:]
    brands, cates = h.names(column("brand"))[-qa.SHORT_WINDOW:], h.names(column("cate"))[-qa.SHORT_WINDOW:]
    score = lambda c: 2 * titles.count(c) + sum(b in c for b in brands if b) + sum(k in c for k in cates if k)
    return max(candidates, key=lambda c: (score(c), -candidates.index(c)))
  if task not in TASKS:
    raise ValueError(f"ceiling: unknown task {task!r} of question {question[:60]!r}; expected one of {', '.join(TASKS)}")
  attr = attr_of(question, language)
  if attr is None or not h.single_valued(attr):
    return None
  names = h.names(column(attr))
  if task == "AP":
    recent, whole = collections.Counter(names[-qa.SHORT_WINDOW:]), collections.Counter(names)
    return max(candidates, key=lambda c: (recent[c], whole[c], -candidates.index(c))) if candidates else None
  if task == "SI":
    top = ranked(names[-qa.SHORT_WINDOW:])
    return top[0] if top else None
  if task == "LI":
    return t["list_sep"].join(ranked(names)[:3])
  path = []
  for part in np.array_split(np.arange(len(names)), qa.TRAJECTORY_PARTS):
    top = ranked([names[i] for i in part])
    if top and (not path or path[-1] != top[0]):
      path.append(top[0])
  return qa.TRAJECTORY_SEP.join(path)


def records(questions, source, tokenizer, language: str) -> tuple[list[dict], collections.Counter]:
  """-> (official-format records of every question, unanswered count per task). A question the
  reader does not answer is kept with an empty prediction (`answered` False): counted wrong, so
  the ceiling is over the same questions as the model it stands beside."""
  out, skipped = [], collections.Counter()
  for q in questions:
    prediction = answer(q.task, q.question, q.candidates, History(source[q.row], tokenizer), language)
    if prediction is None:
      skipped[q.task] += 1
    out.append({"question": q.question, "prediction": prediction or "", "answer": q.answer, "task": q.task,
                "user": q.user, "row": q.row, "answered": prediction is not None})
  return out, skipped
