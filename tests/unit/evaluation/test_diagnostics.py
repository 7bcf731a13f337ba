"""The diagnostics find a planted signal and none where there is none: the linear probe on
hand-built user vectors, the count ceiling on the synthetic data (an independent counting of the
histories the questions were made from). The oracle reader, which trains a tiny LLM, is
tests/integration/test_oracle_reader.py."""

import collections
import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax.data import pipeline
from uqa_jax.data import qa
from uqa_jax.evaluation import ceiling
from uqa_jax.evaluation import probe as probe_lib
from uqa_jax.evaluation import questions as questions_lib
from uqa_jax.evaluation import scoring
from uqa_jax.soft_prompt import model as uqa_model


@dataclasses.dataclass
class Q:
  user: str
  task: str
  question: str
  answer: str
  candidates: tuple = ()
  row: int = 0


def _accuracy(records):
  return float(np.mean([r["prediction"] == r["answer"] for r in records]))


def _planted(n_users, seed, shuffle_labels=False):
  """Users with 8-d vectors; SI's answer is the argmax of the first three coordinates, AP's the
  sign of the fourth (among listed candidates), LI's two places the argmaxes of coordinates 0-2
  and 4-6: a linear readout holds every answer. `shuffle_labels` breaks the link."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_users, 8)).astype(np.float32)
  names, second = np.array(["red", "green", "blue"]), np.array(["cyan", "magenta", "yellow"])
  si = names[np.argmax(x[:, :3], 1)]
  ap = np.where(x[:, 3] > 0, "up", "down")
  li = [f"{a}, {b}" for a, b in zip(si, second[np.argmax(x[:, 4:7], 1)])]
  if shuffle_labels:
    si, ap, li = si[rng.permutation(n_users)], ap[rng.permutation(n_users)], [li[i] for i in rng.permutation(n_users)]
  users = [f"u{seed}-{i}" for i in range(n_users)]
  qs = []
  for i, u in enumerate(users):
    cands = tuple(rng.permutation(["up", "down", "flat"]))
    qs += [Q(u, "SI", "Which colour is the user most interested in recently?", si[i]),
           Q(u, "AP", "Which way next? Candidates: " + "; ".join(cands), ap[i], cands),
           Q(u, "LI", "What are the user's top 3 colours, from most to least interested?", li[i])]
  return qs, dict(zip(users, x))


@pytest.mark.parametrize("shuffle", [False, True])
def test_probe_recovers_a_planted_signal_and_finds_none_in_shuffled_labels(shuffle):
  train, f_train = _planted(300, 0, shuffle)
  eval_, f_eval = _planted(150, 1, shuffle)
  out = probe_lib.probe(train, eval_, {**f_train, **f_eval}, "en")
  assert {s["task"] for s in out["stems"]} == {"SI", "AP", "LI"} and not out["unprobed"]
  assert not out["no_known_candidate"] and not out["unseen_answer"]
  by_task = lambda name, task: [r for r in out["records"][name] if r["task"] == task]
  for task in ("SI", "AP", "LI"):
    probe, majority = _accuracy(by_task("probe", task)), _accuracy(by_task("majority", task))
    control = _accuracy(by_task("shuffled_labels", task))
    # A probe fit to noise is a random direction in 8 dimensions: on a binary answer (AP) its
    # accuracy spreads about +-0.1 around chance, hence the margin of 0.2.
    if shuffle:  # nothing to find: neither probe is better than the majority answer
      assert probe < majority + 0.2 and control < majority + 0.2, task
    else:
      assert probe > 0.85 and probe > majority + 0.3, task
      assert control < majority + 0.2 and control < probe - 0.25, task  # the same probe on shuffled train labels
  # AP answers among the listed candidates only; LI joins its per-place answers with the list separator.
  assert all(r["prediction"] in ("up", "down") for r in by_task("probe", "AP"))
  assert all(r["prediction"].count(", ") == 1 for r in by_task("probe", "LI"))


def test_probe_counts_what_it_cannot_answer():
  """Item-like answers (every gold new): an eval question none of whose candidates was a train
  answer is left out and counted; one with a known distractor is probed but counted unseen."""
  train = [Q(f"t{i}", "IP", "Next? Candidates: " + f"item{i}; item{i + 1}", f"item{i}", (f"item{i}", f"item{i + 1}"))
           for i in range(30)]
  eval_ = [Q("e0", "IP", "Next? Candidates: new1; new2", "new1", ("new1", "new2")),
           Q("e1", "IP", "Next? Candidates: new3; item5", "new3", ("new3", "item5"))]
  features = {q.user: np.ones(2, np.float32) * i for i, q in enumerate(train + eval_)}
  out = probe_lib.probe(train, eval_, features, "en")
  assert out["no_known_candidate"] == {"IP": 1} and out["unseen_answer"] == {"IP": 1}
  for name, records in out["records"].items():  # every eval question keeps a record
    by_user = {r["user"]: r for r in records}
    assert sorted(by_user) == ["e0", "e1"], name
    assert by_user["e0"]["prediction"] == "" and by_user["e0"]["answered"] is False  # left out: counted wrong
    assert by_user["e1"]["answered"] is True and by_user["e1"]["seen_answer"] is False
  assert {r["user"]: r["prediction"] for r in out["records"]["probe"]}["e1"] == "item5"
  assert scoring.score_records(out["records"]["probe"], samples=10)["cells"]["task/IP"]["n"] == 2


def test_probe_leaves_out_stems_with_too_few_train_questions():
  train, f = _planted(10, 0)
  out = probe_lib.probe(train, train, f, "en", probe_lib.ProbeConfig(min_train=11))
  assert not out["stems"] and out["unprobed"] == {"SI": 10, "AP": 10, "LI": 10}
  for records in out["records"].values():  # kept, each with an empty prediction: wrong, not dropped
    assert len(records) == 30 and all(r["prediction"] == "" and not r["answered"] for r in records)


def test_oracle_states_are_mean_title_embeddings_and_need_the_title_column():
  table = np.arange(40, dtype=np.float32).reshape(10, 4)
  titles = np.array([[[1, 2, 0], [3, 0, 0], [0, 0, 0]]], np.int32)  # step 3 is padding (length 2)
  states, mask = uqa_model.title_states(jnp.asarray(table), {uqa_model.TITLE_COLUMN: titles,
                                                              "lengths": np.array([2], np.int32)})
  np.testing.assert_allclose(states[0, 0], (table[1] + table[2]) / 2)
  np.testing.assert_allclose(states[0, 1], table[3])
  np.testing.assert_allclose(states[0, 2], 0)
  assert mask.tolist() == [[1, 1, 0]]
  with pytest.raises(ValueError, match="oracle_titles.*title tokens"):
    uqa_model.title_states(jnp.asarray(table), {"lengths": np.array([2], np.int32)})


def test_count_ceiling_reads_the_interest_labels_off_the_history(en_dir, tokenizer):
  """DF, MF, SI, LI and IT are functions of the clicks the model sees: looking up and counting
  them (decoded from the text features, no code shared with `qa`) gives every label; another
  user's clicks do not. The next click (IP, AP) is predictable well above the first-candidate floor."""
  path = os.path.join(en_dir, "align_data_train.arrow")  # more questions than the eval file's 8 users
  pipe = pipeline.InputConfig(max_len=512, max_text_len=256, max_answer_len=64)
  qs, _, language = questions_lib.load(path, pipe, tokenizer)
  source = pipeline.SequenceSource(path)
  records, skipped = ceiling.records(qs, source, tokenizer, language)
  asked = collections.Counter(q.task for q in qs)
  assert set(skipped) <= {"DF", "MF"}  # only questions about a multi-valued attribute (DF_nth_all)
  for task in ("DF", "MF"):
    assert skipped[task] < asked[task] / 2, (task, skipped[task], asked[task])
  assert len(records) == len(qs)  # an unanswered question is kept, with an empty prediction
  assert collections.Counter(r["task"] for r in records if not r["answered"]) == skipped
  cells = scoring.score_records([r for r in records if r["answered"]], samples=100)["cells"]
  for task in ("DF", "MF", "SI", "LI", "IT"):
    assert cells[f"task/{task}"]["accuracy"] == 1.0, task
  every = scoring.score_records(records, samples=100)["cells"]  # over all questions: unanswered ones wrong
  for task in ("DF", "MF"):
    assert every[f"task/{task}"]["accuracy"] == pytest.approx(1 - skipped[task] / asked[task]), task
  first = {t: np.mean([q.candidates[0] == q.answer for q in qs if q.task == t]) for t in ("IP", "AP")}
  for task in ("IP", "AP"):
    assert cells[f"task/{task}"]["accuracy"] > first[task] + 0.15, task
  # Another user's history (the previous question's row of another user).
  rows = [q.row for q in qs]
  moved = [dataclasses.replace(q, row=rows[(i + 7) % len(rows)]) for i, q in enumerate(qs)]
  other = scoring.score_records([r for r in ceiling.records(moved, source, tokenizer, language)[0] if r["answered"]],
                                 samples=100)["cells"]
  assert other["task/SI"]["accuracy"] < 0.5 and other["task/LI"]["accuracy"] < 0.2
  assert other["task/DF"]["accuracy"] < 0.2 and other["task/MF"]["accuracy"] < 0.5


@pytest.mark.parametrize("language, key, question, expected", [
    ("en", "DF_last", "What are the titles of the last 3 items the user clicked, in order from earliest to latest?", {"k": 3}),
    ("en", "DF_nth", "What is the shop of item number 83 the user clicked (counting from 1)?", {"word": "shop", "n": 83}),
    ("en", "MF_count", 'How many of the user\'s clicked items have brand "Orien Co"?', {"word": "brand", "value": "Orien Co"}),
    ("en", "MF_length", "How long is the user's click history?", {}),
    ("zh", "DF_nth", "用户第12次（从1开始计数）浏览的商品的品牌是什么？", {"n": 12, "word": "品牌"}),
    ("zh", "MF_count", "用户浏览过的类目为「手机」的商品有多少个？", {"word": "类目", "value": "手机"}),
    ("en", "DF_nth", "What is the shop of item number two the user clicked (counting from 1)?", None),
    ("en", "MF_length", "How long is the user's click history? Answer briefly.", None),
])
def test_ceiling_reads_the_fields_of_a_template(language, key, question, expected):
  assert ceiling.fields(qa.TEMPLATES[language][key], question) == expected


class _StatesAsGiven:
  """A stand-in encoder: `apply` returns the batch's own states and mask."""

  def apply(self, variables, batch):
    del variables
    return jnp.asarray(batch["s"]), None, jnp.asarray(batch["m"])


def test_probe_features_are_the_mean_and_the_last_states_a_numpy_loop_gives():
  """What the probe reads, against a plain loop: the mean of each user's valid states, then its
  last `recent` valid states oldest first, zeros before a short history's start; users split
  over batches with a padded last one keep their own rows."""
  from uqa_jax.stages import diagnose
  rng = np.random.default_rng(0)
  lengths = {"a": 5, "b": 1, "c": 3, "d": 6, "e": 2}
  histories = {}
  for u, n in lengths.items():
    s = rng.normal(size=(6, 4)).astype(np.float32)
    m = (np.arange(6) < n).astype(np.int32)
    histories[u] = {"s": np.where(m[:, None] > 0, s, 99.0).astype(np.float32), "m": m}  # padding holds 99
  out = diagnose.user_features(_StatesAsGiven(), {}, histories, batch_size=2, recent=3)
  assert list(out) == list(lengths)
  for u, n in lengths.items():
    s = histories[u]["s"]
    last = [s[t] if t >= 0 else np.zeros(4, np.float32) for t in range(n - 3, n)]
    expected = np.concatenate([s[:n].mean(0)] + last)
    np.testing.assert_allclose(out[u], expected, rtol=1e-6, atol=1e-6, err_msg=u)
