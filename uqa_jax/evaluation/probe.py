"""A linear probe: does a fixed user vector hold the answer to a closed-set question?

Questions are grouped by their *stem* (the text before the candidate list, else the whole
question): every question of one stem asks the same thing of a different user ("Which category
is the user most interested in recently?"), so the answer is a function of the user alone. A
stem with at least `min_train` align-train questions gets one multinomial logistic regression
(features standardised on train; L2; full-batch Adam from zeros: deterministic) from the user's
vector to the answer string; it answers each align-eval question of that stem with the most
probable answer — among the listed candidates where the question lists them. Two references
are computed on the same questions: the majority answer (the stem's most frequent train answer,
among the candidates where listed) and the same probe trained on labels shuffled across train
users (a probe that finds signal there is fitting noise).

Shape letters: N examples, F features, C classes.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from uqa_jax.config.recipes import ProbeConfig
from uqa_jax.data import qa


def stem(question: str, language: str) -> str:
  """The question without its candidate list: what every question of a group asks."""
  at = question.rfind(qa.CANDIDATE_MARKERS[language])
  return question if at < 0 else question[:at]


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x_NxF, y_N, *, num_classes, l2, steps, learning_rate):
  params = {"w": jnp.zeros((x_NxF.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
  tx = optax.adam(learning_rate)

  def loss(p):
    logits = x_NxF @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y_N).mean() + l2 * jnp.sum(p["w"] ** 2)

  def step(carry, _):
    p, s = carry
    g = jax.grad(loss)(p)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params


def fit_predict(x_train_NxF, labels_train, x_eval_NxF, cfg: ProbeConfig) -> tuple[list[str], np.ndarray]:
  """-> (classes, eval log-probabilities [N_eval, C]) of a softmax regression on standardised features."""
  classes = sorted(set(labels_train))
  index = {c: i for i, c in enumerate(classes)}
  mean, std = x_train_NxF.mean(0), x_train_NxF.std(0) + 1e-6
  x_train = (x_train_NxF - mean) / std
  x_eval = (x_eval_NxF - mean) / std
  p = _fit(jnp.asarray(x_train, jnp.float32), jnp.asarray([index[c] for c in labels_train], jnp.int32),
           num_classes=len(classes), l2=cfg.l2, steps=cfg.steps, learning_rate=cfg.learning_rate)
  logits = np.asarray(jnp.asarray(x_eval, jnp.float32) @ p["w"] + p["b"], np.float64)
  return classes, logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _pick(scores: dict, candidates: tuple, fallback: str) -> str:
  """The highest-scoring option: among `candidates` when listed (one never seen in train scores
  -inf; `probe` leaves out questions none of whose candidates was seen), else among every
  scored answer (ties: `fallback`, the majority answer)."""
  if candidates:
    scored = [(scores.get(c, -np.inf), -i) for i, c in enumerate(candidates)]
    return candidates[max(range(len(candidates)), key=lambda i: scored[i])]
  return max(scores, key=lambda c: (scores[c], c == fallback))


def separator(task: str, language: str) -> str | None:
  """How a list answer's parts are joined (LI: a list, IT: a path); None for one-part answers."""
  return {"LI": qa.TEMPLATES[language]["list_sep"], "IT": qa.TRAJECTORY_SEP}.get(task)


def _parts(answers: list[str], sep: str | None) -> list[list[str]]:
  """[position][example] part labels ("" past an answer's end); one position without `sep`."""
  split = [a.split(sep) if sep else [a] for a in answers]
  width = max(len(x) for x in split)
  return [[x[p] if p < len(x) else "" for x in split] for p in range(width)]


def _join(parts: list[str], sep: str | None) -> str:
  return sep.join(p for p in parts if p) if sep else parts[0]


def probe(train, eval_, features: dict, language: str, cfg: ProbeConfig = ProbeConfig()) -> dict:
  """Probe every stem with enough train questions.

  `train`, `eval_`: question objects with `.user`, `.question`, `.answer`, `.candidates`,
  `.task`, `.row`; `features`: {user: [F] vector}. A list answer (LI, IT) is probed part by
  part (one regression per position; "" where an answer is shorter) and the parts joined.
  Counted per task, never silent: `unprobed` (the stem has fewer than `min_train` train
  questions), `no_known_candidate` (none of the question's candidates is a train answer of its
  stem: no probe can choose), `unseen_answer` (probed, but the gold, or a part of it, is no train
  answer of its stem: the probe cannot be right; e.g. item titles). Unprobed and no-known-candidate
  questions keep a record with an empty prediction (`answered` False): wrong, so every record
  list covers all of `eval_`, the questions the model is scored on.
  -> {"records": {"probe" | "majority" | "shuffled_labels": official-format records (`task`,
  `user`, `row`, `seen_answer`, `answered`)}, "stems": per-stem counts, and the three counts}.
  """
  by_stem = collections.defaultdict(list)
  for q in train:
    by_stem[stem(q.question, language)].append(q)
  rng = np.random.default_rng(cfg.seed)
  records = {"probe": [], "majority": [], "shuffled_labels": []}
  stems = []
  counts = {k: collections.Counter() for k in ("unprobed", "no_known_candidate", "unseen_answer")}
  eval_by_stem = collections.defaultdict(list)
  for q in eval_:
    eval_by_stem[stem(q.question, language)].append(q)
  fields = lambda q: {"question": q.question, "answer": q.answer, "task": q.task, "user": q.user, "row": q.row}

  def unanswered(qs):  # kept with an empty prediction: counted wrong, over the model's questions
    for q in qs:
      for name in records:
        records[name].append({**fields(q), "seen_answer": False, "answered": False, "prediction": ""})

  for s, questions in sorted(eval_by_stem.items()):
    seen = by_stem.get(s, [])
    if len(seen) < cfg.min_train:
      counts["unprobed"].update(q.task for q in questions)
      unanswered(questions)
      continue
    known = {q.answer for q in seen}
    dropped = [q for q in questions if q.candidates and not known & set(q.candidates)]
    counts["no_known_candidate"].update(q.task for q in dropped)
    unanswered(dropped)
    questions = [q for q in questions if not (q.candidates and not known & set(q.candidates))]
    if not questions:
      continue
    sep = separator(questions[0].task, language)
    train_parts = _parts([q.answer for q in seen], sep)
    known_parts = [set(p) for p in train_parts]
    seen_answer = []
    for q in questions:
      parts = q.answer.split(sep) if sep else [q.answer]
      seen_answer.append(len(parts) <= len(known_parts) and all(p in known_parts[i] for i, p in enumerate(parts)))
      if not seen_answer[-1]:
        counts["unseen_answer"][q.task] += 1
    x_train = np.stack([features[q.user] for q in seen])
    x_eval = np.stack([features[q.user] for q in questions])
    order = rng.permutation(len(seen))
    answers = {"probe": [], "majority": [], "shuffled_labels": []}  # [position] -> per eval question
    for labels in train_parts:
      freq = collections.Counter(labels)
      majority = max(sorted(freq), key=freq.get)
      fits = {"probe": fit_predict(x_train, labels, x_eval, cfg),
              "shuffled_labels": fit_predict(x_train, [labels[i] for i in order], x_eval, cfg)}
      for name, (classes, logp) in fits.items():
        answers[name].append([_pick(dict(zip(classes, logp[i])), q.candidates, majority)
                              for i, q in enumerate(questions)])
      answers["majority"].append([_pick({c: float(n) for c, n in freq.items()}, q.candidates, majority)
                                  for q in questions])
    for i, q in enumerate(questions):
      base = {**fields(q), "seen_answer": seen_answer[i], "answered": True}
      for name, per_position in answers.items():
        records[name].append({**base, "prediction": _join([p[i] for p in per_position], sep)})
    stems.append({"stem": s, "task": questions[0].task, "train": len(seen), "eval": len(questions),
                  "classes": len(known)})
  return {"records": records, "stems": stems, **{k: dict(v) for k, v in counts.items()}}
