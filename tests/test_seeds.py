"""The across-seeds verdict against hand-computed cases: beaten in every seed beyond the 95%
interval, by more than the seed-to-seed spread of the trained encoder's accuracy; runs that share
a label (two trained encoders in two workdirs) are kept apart."""

import os

import pytest

from uqa_jax import seeds


def _run(workdir, label, kind, acc):
  return {"label": label, "kind": kind, "workdir": workdir, "dir": os.path.join(workdir, "evaluate", label),
          "scores": {"official": {"cells": {"overall": {"accuracy": acc, "ci": [0, 1]}}}}}


def _comparison(workdir, other, difference, ci, p):
  return {"method": "trmpp", "method_dir": os.path.join(workdir, "evaluate", "trmpp"), "other": other,
          "variant": "official", "difference": difference, "ci": list(ci), "p_value": p,
          "other_dir": os.path.join(workdir, "evaluate", other)}


def _seed(seed, accuracy, difference, ci, p=0.01, other_method=None):
  """One seed's report: trmpp in w/full-s<seed> against shuffled_user; optionally a second trmpp
  (in w/titles-s<seed>) with its own (accuracy, difference, ci)."""
  workdir = f"w/full-s{seed}"
  results = [_run(workdir, "trmpp", "method", accuracy), _run(workdir, "shuffled_user", "control", accuracy - difference)]
  comparisons = [_comparison(workdir, "shuffled_user", difference, ci, p)]
  if other_method:
    other = f"w/titles-s{seed}"
    results.append(_run(other, "trmpp", "method", other_method[0]))
    comparisons.append(_comparison(other, "shuffled_user", *other_method[1:], 0.01))
  return {"workdir": workdir, "diagnose": None,
          "report": {"results": results, "comparisons": comparisons, "answer_nll_gains": []}}


def _verdict(*cases):
  lines = seeds.verdicts([_seed(i, *c) for i, c in enumerate(cases)])
  assert all("not compared in every seed" in l for l in lines if " vs zeros" in l or " vs random_encoder" in l)
  return next(l for l in lines if "shuffled_user (official" in l)


def test_beats_only_above_zero_in_every_seed_and_beyond_the_spread():
  assert "trmpp beats shuffled_user" in _verdict((0.30, 0.05, (0.01, 0.09)), (0.32, 0.06, (0.02, 0.10)))
  # Mean difference 5.5 points, but the trained accuracy moves 10 points between seeds.
  assert "does not beat" in _verdict((0.30, 0.05, (0.01, 0.09)), (0.40, 0.06, (0.02, 0.10)))
  # One seed's interval reaches below zero.
  assert "does not beat" in _verdict((0.30, 0.05, (-0.01, 0.09)), (0.31, 0.06, (0.02, 0.10)))
  # Interval above zero but p not below 0.05.
  assert "does not beat" in _verdict((0.30, 0.05, (0.01, 0.09), 0.2), (0.31, 0.06, (0.02, 0.10)))
  line = _verdict((0.30, 0.05, (0.01, 0.09)), (0.32, 0.06, (0.02, 0.10)))
  assert "mean +5.5% (spread of the differences 1.0%)" in line and "spread of trmpp's accuracy 2.0%" in line


def test_the_goal_needs_shuffled_user_and_zeros():
  lines = seeds.verdicts([_seed(i, 0.3 + i / 100, 0.05, (0.01, 0.09)) for i in range(2)])
  assert "goal for trmpp (beat shuffled_user and zeros, official, beyond the intervals and the spread): " \
         "not met (beats only shuffled_user)" in lines


def test_two_trained_encoders_with_one_label_keep_their_own_numbers():
  """trained (beats shuffled_user) and titles_init (does not), both labelled trmpp."""
  cases = [_seed(0, 0.30, 0.05, (0.01, 0.09), other_method=(0.20, 0.01, (-0.02, 0.04))),
           _seed(1, 0.31, 0.06, (0.02, 0.10), other_method=(0.21, 0.00, (-0.03, 0.03)))]
  lines = seeds.verdicts(cases)
  mine = next(l for l in lines if l.startswith("trmpp ") and "shuffled_user" in l)
  theirs = next(l for l in lines if l.startswith("trmpp [titles] "))
  assert "beats" in mine and "+5.0% [+1.0%, +9.0%]" in mine
  assert "does not beat" in theirs and "+1.0% [-2.0%, +4.0%]" in theirs
  table = seeds.comparison_table(cases)
  assert sum("shuffled_user" in row for row in table) == 2


def test_one_seed_or_a_repeated_workdir_is_refused():
  with pytest.raises(ValueError, match="two or more seeds"):
    seeds.load(["w/full-s0"])
  with pytest.raises(ValueError, match="given twice"):
    seeds.load(["w/full-s0", "w/./full-s0"])
