"""The reading ladder (evaluation/diagnosis.py) on hand-built runs whose differences are known."""

import os

import numpy as np

from uqa_jax.evaluation import diagnosis
from uqa_jax.evaluation import scoring
from uqa_jax.evaluation import tables

USERS, PER_USER = 40, 5


def _run(root, workdir, run, kind, right, nll, align_user="encoder", ranked_right=None):
  """A stored run: `right(u, q)` says whether question q of user u is answered right (under
  ranked_all too, unless `ranked_right` says otherwise), `nll(u, q)` the gold's NLL per token."""
  ranked_right = ranked_right or right
  records = []
  for u in range(USERS):
    for q in range(PER_USER):
      ok = right(u, q)
      records.append({"question": f"q{q}?", "answer": "gold", "prediction": "gold" if ok else "other", "task": "SI",
                      "user": f"u{u}", "answer_nll": nll(u, q), "ranked_all_candidates": ["gold", "other"],
                      "ranked_all_prediction": "gold" if ranked_right(u, q) else "other"})
  d = os.path.join(root, workdir, "evaluate", run)
  os.makedirs(d)
  scoring.write_jsonl(os.path.join(d, "predictions.jsonl"), records)
  return {"run": run, "kind": kind, "label": f"{workdir}/{run}", "dir": d, "workdir": os.path.join(root, workdir),
          "align_user": align_user}


def test_the_ladder_names_the_rung_where_each_difference_is_gone(tmp_path):
  rng = np.random.default_rng(0)
  noise = rng.normal(0, 0.05, size=(USERS, PER_USER))
  coin = rng.random((USERS, PER_USER))
  shuffled = lambda w: _run(tmp_path, w, "shuffled_user", "control", lambda u, q: coin[u, q] < 0.3,
                            lambda u, q: 2.0 + noise[u, q])
  results = [
      # text: the own user's titles make answers right far more often and the gold far more likely
      _run(tmp_path, "text", "aligned", "baseline", lambda u, q: coin[u, q] < 0.8, lambda u, q: 1.5 + noise[u, q],
           align_user="text20", ranked_right=lambda u, q: coin[u, q] < 0.95), shuffled("text"),
      # oracle soft tokens: the gold more likely, the same answers as with another user's
      _run(tmp_path, "oracle", "aligned", "diagnostic", lambda u, q: coin[u, q] < 0.3, lambda u, q: 1.8 + noise[u, q],
           align_user="oracle_titles"), shuffled("oracle"),
      # the encoder: nothing
      _run(tmp_path, "main", "aligned", "method", lambda u, q: coin[u, q] < 0.3, lambda u, q: 2.0 + noise[u, q]),
      shuffled("main")]
  method = results[4]
  gains = tables.nll_gains(results, samples=200)
  gain_of = {g["method_dir"]: g["cells"] for g in gains if "cells" in g}
  lines, said, text = diagnosis.ladder(results, method, gain_of, samples=200)
  assert text is True
  assert "NLL gain: gone at encoder (beyond noise before it: text, oracle)" in said, said
  assert "official: gone at oracle (beyond noise before it: text)" in said
  assert "ranked_all: gone at oracle (beyond noise before it: text)" in said
  row = next(l for l in lines if l.startswith("| text20 aligned"))
  cells = [c.strip() for c in row.split("|")[1:-1]]  # rung, NLL gain, official, ranked_all
  for cell, right in zip(cells[2:], (0.8, 0.95)):  # every user asked as often: the mean over users
    by_hand = (coin < right).mean() - (coin < 0.3).mean()
    assert cell.startswith(f"{by_hand:+.1%} [") and by_hand > 0.4, (cell, by_hand)
  # without the text rung: not measured, and the rest still read
  lines, said, text = diagnosis.ladder(results[2:], method, gain_of, samples=200)
  assert text is None and any(l.startswith("| text20 aligned") and "not in this report (include a text20 workdir" in l for l in lines)
  assert "NLL gain: gone at encoder (beyond noise before it: oracle)" in said
  # the text rung aligned but its shuffled_user never run: said as such, not as a missing workdir
  lines, _, text = diagnosis.ladder(results[:1] + results[2:], method, gain_of, samples=200)
  assert text is None and any(l.startswith("| text20 aligned") and "its shuffled_user not run" in l for l in lines)
  lines, said, _ = diagnosis.ladder(results[:2], None, gain_of, samples=200)  # text alone, all beyond noise
  assert "NLL gain: beyond noise at every measured rung (text)" in said


def test_the_data_level_is_judged_only_when_the_count_reader_reads_every_question():
  """A ceiling that beats the best constant beyond noise holds; one that does not fails; but when
  the count reader cannot read some questions (scored wrong), the data level is not judged
  (MovieLens' genre questions once made the report say the labels were wrong)."""
  cell = lambda acc, lo: {"accuracy": acc, "ci": [lo, acc + 0.05]}
  ceiling = {"overall": cell(0.6, 0.55), "task/SI": cell(1.0, 1.0), "task/IP": cell(0.2, 0.1)}
  constant = {"accuracy": 0.3}
  assert diagnosis.data_level(ceiling, constant, {}) == (True, "Data: counting the visible clicks answers IP 20%, SI 100%.")
  low = {**ceiling, "overall": cell(0.35, 0.28)}
  assert diagnosis.data_level(low, constant, {})[0] is False
  held, said = diagnosis.data_level(low, constant, {"SI": 84, "LI": 84})
  assert held is None and said.startswith("Data: not judged: the count reader cannot read 168 questions (LI 84, SI 84)")
  assert diagnosis.lost_at({"data": held, "encoder": False}).startswith("Lost at: encoder (not measured before it: data")


def test_a_rung_that_reads_less_than_a_later_one_is_not_named_where_the_user_is_lost(tmp_path):
  """Text that the aligned LLM ignores while the encoder's soft tokens are read: not a ladder, and
  the sentence says so instead of 'gone at text'."""
  rng = np.random.default_rng(1)
  noise = rng.normal(0, 0.05, size=(USERS, PER_USER))
  coin = rng.random((USERS, PER_USER))
  shuffled = lambda w: _run(tmp_path, w, "shuffled_user", "control", lambda u, q: coin[u, q] < 0.3,
                            lambda u, q: 2.0 + noise[u, q])
  results = [_run(tmp_path, "text", "aligned", "baseline", lambda u, q: coin[u, q] < 0.3,
                  lambda u, q: 2.0 + noise[u, q], align_user="text20"), shuffled("text"),
             _run(tmp_path, "main", "aligned", "method", lambda u, q: coin[u, q] < 0.8, lambda u, q: 1.5 + noise[u, q]),
             shuffled("main")]
  gains = tables.nll_gains(results, samples=200)
  gain_of = {g["method_dir"]: g["cells"] for g in gains if "cells" in g}
  _, said, text = diagnosis.ladder(results, results[2], gain_of, samples=200)
  assert text is False
  for measure in ("NLL gain", "official", "ranked_all"):
    assert f"{measure}: not beyond noise at text but beyond noise at encoder: a rung reads less" in said, said
  assert "gone at" not in said
  # and the chain is not said to be lost at text while the trained soft prompt is read
  assert diagnosis.lost_at({"data": True, "text": text, "encoder": True, "adapter": True}).startswith(
      "Not lost at any measured level (not measured: reader, answers). (text fails although adapter holds")
