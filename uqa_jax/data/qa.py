"""Question/answer pairs for the seven UQABench sub-tasks, from a user's click history.

Every answer is computed from the history the model sees (and, for IP/AP, the held-out
next item), never from the generator's hidden parameters, so the same code labels real
data. Template rules (paper §3.5.2): candidates for questions an LLM cannot answer freely
(IP, AP), no MF question whose answer is 0, DF asks for k < 4 items, multi-item answers in
chronological order (DF) or by interest (LI). The `zh` phrasing is classified into its own
task by the official substring rule (`schema.TASK_RULES`), `en` by our mirror of it.
"""

import dataclasses
import json

import numpy as np

from uqa_jax.data import schema
from uqa_jax.data.catalog import Catalog

NUM_CANDIDATES = 4
SHORT_WINDOW = 10  # "recent" for SI: the last this many clicks
TRAJECTORY_PARTS = 3  # IT: the history is cut into this many consecutive parts

TEMPLATES = {
    "zh": {
        "DF_last": "用户最近{k}次浏览的商品的标题依次是什么？（按时间顺序）",
        "DF_nth": "用户第{n}次（从1开始计数）浏览的商品的{word}是什么？",
        "MF_count": "用户浏览过的{word}为「{value}」的商品有多少个？",
        "MF_length": "用户浏览历史的长度是多少？",
        "IP": "用户下一个可能点击的商品的标题是什么？候选：{candidates}",
        "AP": "用户下一个可能点击的商品的{word}是什么？候选：{candidates}",
        "LI": "用户最感兴趣的3个{word}是什么？（按兴趣从高到低）",
        "SI": "用户近期最感兴趣的{word}是什么？",
        "IT": "用户对{word}偏好的转移路径是什么？（按时间顺序，用 -> 连接）",
        "list_sep": "、", "candidate_sep": "；",
    },
    "en": {
        "DF_last": "What are the titles of the last {k} items the user clicked, in order from earliest to latest?",
        "DF_nth": "What is the {word} of item number {n} the user clicked (counting from 1)?",
        "MF_count": "How many of the user's clicked items have {word} \"{value}\"?",
        "MF_length": "How long is the user's click history?",
        "IP": "Which item will the user most likely click next? Give its title. Candidates: {candidates}",
        "AP": "What is the {word} of the item the user will most likely click next? Candidates: {candidates}",
        "LI": "What are the user's top 3 {words}, from most to least interested?",
        "SI": "Which {word} is the user most interested in recently?",
        "IT": "How has the user's {word} preference shifted over time? Answer as A -> B -> C.",
        "list_sep": ", ", "candidate_sep": "; ",
    },
}
TRAJECTORY_SEP = " -> "


@dataclasses.dataclass(frozen=True)
class QA:
  task: str
  question: str
  answer: str
  candidates: tuple[str, ...] = ()

  def chat_json(self) -> str:
    """The official `text` column: a JSON chat list, user question then assistant answer."""
    return json.dumps([{"role": "user", "content": self.question},
                       {"role": "assistant", "content": self.answer}], ensure_ascii=False)


def ranked_values(labels: np.ndarray) -> list[int]:
  """Distinct non-zero labels by click count, ties broken by the more recent last click."""
  labels = labels[labels > 0]
  if labels.size == 0:
    return []
  values, counts = np.unique(labels, return_counts=True)
  last = np.array([np.flatnonzero(labels == v)[-1] for v in values])
  order = np.lexsort((-last, -counts))  # primary: count desc; secondary: recency desc
  return values[order].tolist()


def _candidates(gold: str, pool: list[str], rng: np.random.Generator) -> tuple[str, ...]:
  """The gold answer plus up to NUM_CANDIDATES-1 distinct distractors from `pool`, shuffled."""
  distractors = list(dict.fromkeys(p for p in pool if p and p != gold))
  picked = [distractors[i] for i in rng.permutation(len(distractors))[:NUM_CANDIDATES - 1]]
  cands = [gold, *picked]
  return tuple(cands[i] for i in rng.permutation(len(cands)))


class QAGenerator:
  """Generates one QA pair per task per user (where the history allows it)."""

  def __init__(self, catalog: Catalog, attrs: tuple[str, ...]):
    self.catalog = catalog
    # Side tables QA may ask about, e.g. ("cate", "shop", "brand"); IT follows the last one.
    self.attrs = attrs
    self.t = TEMPLATES[catalog.language]
    self._labels = {a: np.array([catalog.label(a, i) for i in range(catalog.num_items + 1)])
                    for a in attrs}
    # Distractor pools: items / values by popularity order are drawn per user below.
    self._all_titles = catalog.titles[1:]

  def _word(self, attr):
    return self.catalog.attr_words[attr]

  def _names(self, attr, ids):
    return [self.catalog.names[attr][j] for j in ids]

  def generate(self, history: np.ndarray, next_item: int, rng: np.random.Generator) -> list[QA]:
    history = np.asarray(history)
    out = []
    for task in schema.TASKS:
      qa = getattr(self, f"_{task.lower()}")(history, next_item, rng)
      if qa is not None:
        out.append(qa)
    return out

  def _pick_attr(self, rng):
    return self.attrs[rng.integers(len(self.attrs))]

  def _df(self, h, _, rng):
    t = self.t
    if rng.random() < 0.5:
      k = int(rng.integers(1, min(3, len(h)) + 1))
      titles = [self.catalog.titles[i] for i in h[-k:]]
      return QA("DF", t["DF_last"].format(k=k), t["list_sep"].join(titles))
    attr = self._pick_attr(rng)
    n = int(rng.integers(1, len(h) + 1))
    name = self.catalog.name(attr, int(h[n - 1]))
    if not name:
      return None
    return QA("DF", t["DF_nth"].format(n=n, word=self._word(attr)[0]), name)

  def _mf(self, h, _, rng):
    if rng.random() < 0.3:
      return QA("MF", self.t["MF_length"], str(len(h)))
    attr = self._pick_attr(rng)
    labels = self._labels[attr][h]
    present = np.unique(labels[labels > 0])
    if present.size == 0:  # every answer would be 0: the paper discards those
      return None
    value = int(present[rng.integers(present.size)])
    question = self.t["MF_count"].format(word=self._word(attr)[0],
                                         value=self.catalog.names[attr][value])
    return QA("MF", question, str(int((labels == value).sum())))

  def _ip(self, h, nxt, rng):
    gold = self.catalog.titles[nxt]
    # Plausible distractors: other items from the user's own top attribute values, then any item.
    attr = self.attrs[0]
    top = ranked_values(self._labels[attr][h])[:3]
    same = np.flatnonzero(np.isin(self._labels[attr], top))
    pool = [self.catalog.titles[i] for i in rng.permutation(same)[:50] if i != nxt]
    pool += [self._all_titles[i] for i in rng.integers(len(self._all_titles), size=20)]
    cands = _candidates(gold, pool, rng)
    return QA("IP", self.t["IP"].format(candidates=self.t["candidate_sep"].join(cands)), gold, cands)

  def _ap(self, h, nxt, rng):
    attr = self._pick_attr(rng)
    gold_id = self.catalog.label(attr, nxt)
    if gold_id == 0:
      return None
    gold = self.catalog.names[attr][gold_id]
    pool = self._names(attr, ranked_values(self._labels[attr][h])[:6])
    pool += self._names(attr, rng.integers(1, len(self.catalog.names[attr]), size=10))
    cands = _candidates(gold, pool, rng)
    question = self.t["AP"].format(word=self._word(attr)[0],
                                   candidates=self.t["candidate_sep"].join(cands))
    return QA("AP", question, gold, cands)

  def _li(self, h, _, rng):
    attr = self._pick_attr(rng)
    top = ranked_values(self._labels[attr][h])[:3]
    if len(top) < 3:
      return None
    question = self.t["LI"].format(word=self._word(attr)[0], words=self._word(attr)[1])
    return QA("LI", question, self.t["list_sep"].join(self._names(attr, top)))

  def _si(self, h, _, rng):
    attr = self._pick_attr(rng)
    top = ranked_values(self._labels[attr][h[-SHORT_WINDOW:]])[:1]
    if not top:
      return None
    return QA("SI", self.t["SI"].format(word=self._word(attr)[0]), self._names(attr, top)[0])

  def _it(self, h, _, rng):
    attr = self.attrs[-1]
    if len(h) < TRAJECTORY_PARTS:
      return None
    path = []
    for part in np.array_split(self._labels[attr][h], TRAJECTORY_PARTS):
      top = ranked_values(part)[:1]
      if top and (not path or path[-1] != top[0]):
        path.append(top[0])
    if len(path) < 2:  # no shift of interest to ask about
      return None
    return QA("IT", self.t["IT"].format(word=self._word(attr)[0]),
              TRAJECTORY_SEP.join(self._names(attr, path)))
