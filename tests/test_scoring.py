"""The official rule and the floors, against brute force."""

import numpy as np
import pytest

from uqa_jax import scoring


def test_best_constant_matches_brute_force_over_all_strings():
  rng = np.random.default_rng(0)
  for _ in range(50):
    golds = ["".join(rng.choice(list("12ab"), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 30))]
    # Every string up to length 4 over the alphabet: the constant need not be a gold.
    alphabet = [""]
    for _ in range(4):
      alphabet += [s + c for s in alphabet for c in "12ab" if len(s + c) <= 4]
    brute = max(sum(c.startswith(g) for g in golds) for c in set(alphabet)) / len(golds)
    answer, accuracy = scoring.best_constant(golds)
    assert accuracy == brute
    assert sum(answer.startswith(g) for g in golds) / len(golds) == brute


def test_a_longer_constant_is_credited_for_its_prefixes():
  """Under `startswith`, "15" scores on gold "1" too: the floor counts it."""
  assert scoring.best_constant(["1", "1", "15", "2", "3"]) == ("15", 0.6)


@pytest.mark.parametrize("gold", ["", "  "])
def test_empty_gold_is_an_error_not_a_point(gold):
  with pytest.raises(ValueError, match="empty gold"):
    scoring.is_correct("anything", gold)
  with pytest.raises(ValueError, match="empty gold"):
    scoring.best_constant(["a", gold])


def test_first_candidate_and_report():
  rows = [("IP", "b", ("a", "b")), ("IP", "a", ("a", "c")), ("MF", "3", ()), ("MF", "3", ())]
  report = scoring.answer_report(rows)
  assert report["IP"]["first_candidate_accuracy"] == 0.5
  assert report["MF"]["first_candidate_accuracy"] is None
  assert report["MF"]["top_answers"] == [["3", 2]] and report["MF"]["best_constant_accuracy"] == 1.0
