"""Question/answer pairs for the seven UQABench sub-tasks, from a user's click history.

Every answer is computed from the history the model sees (and, for IP/AP, the held-out
next item), never from the generator's hidden parameters, so the same code labels real
data. Template rules (paper §3.5.2): candidates for questions an LLM cannot answer freely
(IP, AP), no MF question whose answer is 0, DF asks for k < 4 items, multi-item answers in
chronological order (DF) or by interest (LI). The `zh` phrasing is classified into its own
task by the official substring rule (`schema.TASK_RULES`), `en` by our mirror of it.

Attributes with several values per item (MovieLens genres) are used whole, never by a
"first" value:
  * a click counts once toward every value in its bag (MF counts, LI, SI, IT rankings);
  * DF asks for all the item's values, answered in alphabetical order (the question says so);
  * AP's gold is one of the next item's values (drawn at random) and no distractor is any of
    its values, so exactly one candidate is a true value.
Rankings (LI, SI, IT) order values by the number of clicks carrying them, then by the more
recent last such click, then alphabetically by name (only bags can tie on both).

MF asks about a value sampled so that answers spread: first a count level uniformly among the
distinct counts the history shows, then a value with that count. Drawing the value uniformly
instead makes "1" the answer to ~40% of MF questions (most values a user touches once).
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
        "DF_nth_all": "用户第{n}次（从1开始计数）浏览的商品的所有{word}是什么？（按字母顺序）",
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
        "DF_nth_all": "What are all the {words} of item number {n} the user clicked (counting from 1), in alphabetical order?",
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


TITLE_COLUMN = "uni_seq_title_bpe_token_ids"
HISTORY_HEADER = {"zh": "用户最近浏览的{k}个商品的标题（按时间顺序）：", "en": "Titles of the user's last {k} clicked items, oldest first:"}


def history_text(row: dict, k: int, tokenizer, language: str) -> str:
  """The last `k` clicks' titles of a row, oldest first, one numbered line each, decoded from
  the title tokens (the text baselines' prompt: what the user embedding stands in for)."""
  titles = row[TITLE_COLUMN]
  steps = range(max(0, titles.num_steps - k), titles.num_steps)
  lines = [f"{i + 1}. {tokenizer.decode(titles.bag(t).tolist())}" for i, t in enumerate(steps)]
  return HISTORY_HEADER[language].format(k=len(lines)) + "\n" + "\n".join(lines)


def with_history(messages: list[dict], history: str) -> list[dict]:
  """The chat with `history` written above the last user turn's question."""
  return messages[:-1] + [{**messages[-1], "content": history + "\n\n" + messages[-1]["content"]}]


CANDIDATE_MARKERS = {"zh": "候选：", "en": "Candidates: "}  # what precedes the list in IP/AP questions


def parse_candidates(question: str, language: str) -> tuple[str, ...]:
  """The candidates a question lists after its marker (`TEMPLATES`), or () when it lists none."""
  marker = CANDIDATE_MARKERS[language]
  at = question.rfind(marker)
  if at < 0:
    return ()
  return tuple(c for c in question[at + len(marker):].split(TEMPLATES[language]["candidate_sep"]))


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


def ranked_values(values: np.ndarray, steps: np.ndarray | None = None,
                  names: list[str] | None = None) -> list[int]:
  """Distinct non-zero values by click count, ties broken by the more recent last click, then name.

  `values[e]` was carried by the click at step `steps[e]` (default: one value per step, e = t).
  """
  values = np.asarray(values)
  steps = np.arange(values.size) if steps is None else np.asarray(steps)
  keep = values > 0
  values, steps = values[keep], steps[keep]
  if values.size == 0:
    return []
  distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  last = np.full(distinct.size, -1)
  np.maximum.at(last, inverse, steps)
  by_name = (np.argsort(np.argsort([names[v] for v in distinct], kind="stable"))
             if names is not None else np.arange(distinct.size))
  order = np.lexsort((by_name, -last, -counts))  # primary: count desc; then recency; then name
  return distinct[order].tolist()


def _candidates(gold: str, pool: list[str], rng: np.random.Generator,
                exclude: frozenset = frozenset()) -> tuple[str, ...]:
  """The gold answer plus up to NUM_CANDIDATES-1 distinct distractors from `pool`, shuffled.

  Distractors are never the gold, nor in `exclude` (other true answers, e.g. the gold item's
  other genres).
  """
  distractors = list(dict.fromkeys(p for p in pool if p and p != gold and p not in exclude))
  picked = [distractors[i] for i in rng.permutation(len(distractors))[:NUM_CANDIDATES - 1]]
  cands = [gold, *picked]
  return tuple(cands[i] for i in rng.permutation(len(cands)))


class QAGenerator:
  """Generates one QA pair per task per user (where the history allows it)."""

  def __init__(self, catalog: Catalog, attrs: tuple[str, ...],
               interest_attrs: tuple[str, ...] | None = None):
    self.catalog = catalog
    # Side tables QA may ask about, e.g. ("cate", "shop", "brand"); IT follows the last one.
    self.attrs = attrs
    # The ones AP, LI and SI ask about (default: all). A table nearly every click shares a value
    # of (MovieLens decades: mostly "1990s") makes those questions answerable by a constant.
    self.interest_attrs = interest_attrs or attrs
    unknown = set(self.interest_attrs) - set(attrs)
    if unknown:
      raise ValueError(f"interest_attrs {sorted(unknown)} are not among the QA attrs {attrs}")
    self.t = TEMPLATES[catalog.language]
    self._bags = {a: catalog.bag_matrix(a) for a in attrs}  # [num_items + 1, K] ids, 0 = none
    self._multi = {a: catalog.is_multi_valued(a) for a in attrs}
    self._all_titles = catalog.titles[1:]

  def _word(self, attr):
    return self.catalog.attr_words[attr]

  def _names(self, attr, ids):
    return [self.catalog.names[attr][j] for j in ids]

  def _events(self, attr, h):
    """(steps, values): one entry per (click, value in its bag) of history `h`."""
    m_TxK = self._bags[attr][h]
    steps, slots = np.nonzero(m_TxK)
    return steps, m_TxK[steps, slots]

  def _ranked(self, attr, h):
    steps, values = self._events(attr, h)
    return ranked_values(values, steps, self.catalog.names[attr])

  def generate(self, history: np.ndarray, next_item: int, rng: np.random.Generator,
               *, next_is_known: bool = True) -> list[QA]:
    """QA pairs for one user; `next_is_known=False` (the held-out click shares its time with
    the one before, so which came last is arbitrary) leaves out IP and AP."""
    history = np.asarray(history)
    out = []
    for task in schema.TASKS:
      if task in ("IP", "AP") and not next_is_known:
        continue
      qa = getattr(self, f"_{task.lower()}")(history, next_item, rng)
      if qa is not None:
        out.append(qa)
    return out

  def _pick_attr(self, rng, attrs=None):
    attrs = attrs or self.attrs
    return attrs[rng.integers(len(attrs))]

  def _df(self, h, _, rng):
    t = self.t
    if rng.random() < 0.5:
      k = int(rng.integers(1, min(3, len(h)) + 1))
      titles = [self.catalog.titles[i] for i in h[-k:]]
      return QA("DF", t["DF_last"].format(k=k), t["list_sep"].join(titles))
    attr = self._pick_attr(rng)
    n = int(rng.integers(1, len(h) + 1))
    names = sorted(self._names(attr, self.catalog.side[attr][int(h[n - 1])]))
    if not names:
      return None
    singular, plural = self._word(attr)
    template = t["DF_nth_all"] if self._multi[attr] else t["DF_nth"]
    return QA("DF", template.format(n=n, word=singular, words=plural), t["list_sep"].join(names))

  def _mf(self, h, _, rng):
    if rng.random() < 0.3:
      return QA("MF", self.t["MF_length"], str(len(h)))
    attr = self._pick_attr(rng)
    _, values = self._events(attr, h)
    present, counts = np.unique(values, return_counts=True)
    if present.size == 0:  # every answer would be 0: the paper discards those
      return None
    level = rng.choice(np.unique(counts))  # a count level first, so answers spread
    at_level = present[counts == level]
    value = int(at_level[rng.integers(at_level.size)])
    question = self.t["MF_count"].format(word=self._word(attr)[0],
                                         value=self.catalog.names[attr][value])
    return QA("MF", question, str(int(level)))

  def _ip(self, h, nxt, rng):
    gold = self.catalog.titles[nxt]
    # Plausible distractors: other items from the user's own top attribute values, then any item.
    attr = self.attrs[0]
    top = self._ranked(attr, h)[:3]
    same = np.flatnonzero(np.isin(self._bags[attr], top).any(-1))
    pool = [self.catalog.titles[i] for i in rng.permutation(same)[:50] if i != nxt]
    pool += [self._all_titles[i] for i in rng.integers(len(self._all_titles), size=20)]
    cands = _candidates(gold, pool, rng)
    return QA("IP", self.t["IP"].format(candidates=self.t["candidate_sep"].join(cands)), gold, cands)

  def _ap(self, h, nxt, rng):
    attr = self._pick_attr(rng, self.interest_attrs)
    true_ids = self.catalog.side[attr][nxt]
    if not true_ids:
      return None
    true_names = self._names(attr, true_ids)
    gold = true_names[rng.integers(len(true_names))]
    pool = self._names(attr, self._ranked(attr, h)[:6])
    pool += self._names(attr, rng.integers(1, len(self.catalog.names[attr]), size=10))
    cands = _candidates(gold, pool, rng, exclude=frozenset(true_names))
    question = self.t["AP"].format(word=self._word(attr)[0],
                                   candidates=self.t["candidate_sep"].join(cands))
    return QA("AP", question, gold, cands)

  def _li(self, h, _, rng):
    attr = self._pick_attr(rng, self.interest_attrs)
    top = self._ranked(attr, h)[:3]
    if len(top) < 3:
      return None
    question = self.t["LI"].format(word=self._word(attr)[0], words=self._word(attr)[1])
    return QA("LI", question, self.t["list_sep"].join(self._names(attr, top)))

  def _si(self, h, _, rng):
    attr = self._pick_attr(rng, self.interest_attrs)
    top = self._ranked(attr, h[-SHORT_WINDOW:])[:1]
    if not top:
      return None
    return QA("SI", self.t["SI"].format(word=self._word(attr)[0]), self._names(attr, top)[0])

  def _it(self, h, _, rng):
    attr = self.attrs[-1]
    if len(h) < TRAJECTORY_PARTS:
      return None
    path = []
    for part in np.array_split(h, TRAJECTORY_PARTS):
      top = self._ranked(attr, part)[:1]
      if top and (not path or path[-1] != top[0]):
        path.append(top[0])
    if len(path) < 2:  # no shift of interest to ask about
      return None
    return QA("IT", self.t["IT"].format(word=self._word(attr)[0]),
              TRAJECTORY_SEP.join(self._names(attr, path)))
