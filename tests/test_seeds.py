"""The across-seeds verdict against hand-computed cases: beaten in every seed beyond the 95%
interval, by more than the seed-to-seed spread of the trained encoder's accuracy."""

import os

import pytest

from uqa_jax import seeds


def _seed(workdir, accuracy, difference, ci, p=0.01):
  run = lambda label, kind, acc: {"label": label, "kind": kind, "workdir": workdir,
                                  "scores": {"official": {"cells": {"overall": {"accuracy": acc, "ci": [0, 1]}}}}}
  comparison = {"method": "trmpp", "other": "shuffled_user", "variant": "official", "difference": difference,
                "ci": list(ci), "p_value": p, "other_dir": os.path.join(workdir, "evaluate", "shuffled_user")}
  return {"workdir": workdir, "diagnose": None,
          "report": {"results": [run("trmpp", "method", accuracy), run("shuffled_user", "control", accuracy - difference)],
                     "comparisons": [comparison], "answer_nll_gains": []}}


def _verdict(*cases):
  lines = seeds.verdicts([_seed(f"w/full-s{i}", *c) for i, c in enumerate(cases)])
  line = next(l for l in lines if "shuffled_user" in l)
  assert all("not compared in every seed" in l for l in lines if "zeros" in l or "random_encoder" in l)
  return line


def test_beats_only_above_zero_in_every_seed_and_beyond_the_spread():
  assert "trmpp beats shuffled_user" in _verdict((0.30, 0.05, (0.01, 0.09)), (0.32, 0.06, (0.02, 0.10)))
  # Mean difference 5.5 points, but the trained accuracy moves 10 points between seeds.
  assert "does not beat" in _verdict((0.30, 0.05, (0.01, 0.09)), (0.40, 0.06, (0.02, 0.10)))
  # One seed's interval reaches below zero.
  assert "does not beat" in _verdict((0.30, 0.05, (-0.01, 0.09)), (0.31, 0.06, (0.02, 0.10)))
  # Interval above zero but p not below 0.05.
  assert "does not beat" in _verdict((0.30, 0.05, (0.01, 0.09), 0.2), (0.31, 0.06, (0.02, 0.10)))
  line = _verdict((0.30, 0.05, (0.01, 0.09)), (0.32, 0.06, (0.02, 0.10)))
  assert "mean +5.5%" in line and "spread of trmpp's accuracy 2.0%" in line


def test_one_seed_is_refused():
  with pytest.raises(ValueError, match="two or more seeds"):
    seeds.load(["w/full-s0"])
