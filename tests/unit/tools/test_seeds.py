"""The across-seeds verdict against hand-computed cases: beaten in every seed beyond the 95%
interval, by more than the seed-to-seed spread of the trained encoder's accuracy; runs that share
a label (two trained encoders in two workdirs) are kept apart."""

import json
import os

import pytest

from uqa_jax.tools import seeds


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


def _stored(root, seed, acc, gains, diagnose=True, control_seed=None):
  """A seed's workdir on disk as the report and diagnose stages leave it: trmpp and its
  shuffled_user (overall and SI cells), the four diagnose runs, and the NLL gains given."""
  workdir = os.path.join(root, f"full-s{seed}")
  cells = lambda a: {"official": {"cells": {"overall": {"accuracy": a, "ci": [0, 1]},
                                            "task/SI": {"accuracy": a / 2, "ci": [0, 1]}}}}
  results = [{**_run(workdir, "trmpp", "method", acc), "seed": seed, "scores": cells(acc)},
             {**_run(workdir, "shuffled_user", "control", acc - 0.1), "seed": seed if control_seed is None else control_seed,
              "scores": cells(acc - 0.1)}]
  report = {"results": results, "comparisons": [_comparison(workdir, "shuffled_user", 0.1, (0.05, 0.15), 0.01)],
            "answer_nll_gains": gains(workdir), "diagnosis": f"Lost at: answers (seed {seed})."}
  os.makedirs(os.path.join(workdir, "report"))
  with open(os.path.join(workdir, "report", "report.json"), "w") as f:
    json.dump(report, f)
  if diagnose:
    os.makedirs(os.path.join(workdir, "diagnose"))
    with open(os.path.join(workdir, "diagnose", "result.json"), "w") as f:
      json.dump({"runs": {name: {"scores": cells(0.9 if name == "ceiling" else 0.2)} for _, name in seeds.DIAGNOSE_ROWS}}, f)
  return workdir


def _gain(workdir, label, value):
  return {"method": label, "method_dir": os.path.join(workdir, "evaluate", label),
          "cells": {"overall": {"gain": value, "ci": [value - 0.01, value + 0.01], "p_value": 0.002}}}


def test_tables_from_stored_reports_hold_each_seed_and_the_mean(tmp_path):
  """Table 2 cells are the mean with every seed's value, the diagnose rows stand beside them, and
  an NLL gain measured in seed 1 only is listed (with — for seed 0), not dropped."""
  oracle = lambda w: os.path.join(os.path.dirname(w), "oracle-" + os.path.basename(w))
  w0 = _stored(tmp_path, 0, 0.30, lambda w: [_gain(w, "trmpp", 0.08)])
  w1 = _stored(tmp_path, 1, 0.34, lambda w: [_gain(w, "trmpp", 0.06), _gain(oracle(w), "oracle", 0.02)])
  text = seeds.write([w0, w1])
  row = next(l for l in text.splitlines() if l.startswith("| trmpp | method |"))
  assert row.endswith("| 32.0 (30.0 / 34.0) |")  # overall: the mean of 30 and 34, then each seed
  assert "| 16.0 (15.0 / 17.0) |" in row  # SI
  ceiling = next(l for l in text.splitlines() if l.startswith("| count ceiling | diagnose |"))
  assert ceiling.endswith("| 90.0 (90.0 / 90.0) |")
  gains = [l for l in text.splitlines() if l.startswith("| trmpp") and "| overall |" in l]
  assert gains == ["| trmpp | overall | +0.0800 [+0.0700, +0.0900], p=0.002 | +0.0600 [+0.0500, +0.0700], p=0.002 |"]
  assert "| oracle [oracle-full] | overall | — | +0.0200 [+0.0100, +0.0300], p=0.002 |" in text
  assert f"- {w0} (seed 0): Lost at: answers (seed 0)." in text and f"- {w1} (seed 1): Lost at: answers (seed 1)." in text


def test_seeds_must_differ_each_report_must_hold_one_seed_and_diagnose_must_exist(tmp_path):
  no_gains = lambda w: []
  a = _stored(tmp_path / "a", 0, 0.3, no_gains)
  b = _stored(tmp_path / "b", 0, 0.3, no_gains)
  with pytest.raises(ValueError, match=r"are both seed 0"):
    seeds.load([a, b])
  mixed = _stored(tmp_path / "c", 1, 0.3, no_gains, control_seed=2)
  with pytest.raises(ValueError, match=r"joins runs of several seeds: seed 1: .*; seed 2: .*shuffled_user"):
    seeds.load([a, mixed])
  bare = _stored(tmp_path / "d", 3, 0.3, no_gains, diagnose=False)
  with pytest.raises(FileNotFoundError, match=r"diagnose/result.json is missing"):
    seeds.load([a, bare])
