"""A run's label names what its alignment adds to the default recipe, so a report that includes
several runs of one encoder (trained, + contrast, + reconstruction) tells them apart, and two
workdirs of the same recipe are told apart by their names."""

import json
import os

from configs import default
from uqa_jax.evaluation import evaluator
from uqa_jax.evaluation import tables
from uqa_jax.runtime import atomic
from uqa_jax.runtime import workdir as workdir_lib


def _label(run="aligned", **align):
  c = default.get_config()
  for k, v in align.items():
    setattr(c.align, k, v)
  return evaluator.describe(c, run)["label"]


def test_labels_name_the_recipe_of_aligned_runs_only():
  assert _label() == "trmpp"
  assert _label(contrast_weight=1.0) == "trmpp + contrast"
  assert _label(reconstruct_steps=20) == "trmpp + reconstruction"
  assert _label(reconstruct_steps=20, user="zeros") == "zeros + reconstruction"
  assert _label(llm_steps=64, contrast_weight=0.5) == "trmpp + contrast, LLM frozen after 64 steps"
  assert _label("shuffled_user", contrast_weight=1.0) == "shuffled_user"  # the report names it after its model
  assert _label(user="oracle_titles") == "oracle reader (titles' LLM embeddings)"


def test_labels_name_more_question_rounds():
  c = default.get_config()
  c.data.train_questions = 3
  assert evaluator.describe(c, "aligned")["label"] == "trmpp + 3 question rounds"
  c.align.user = "zeros"
  assert evaluator.describe(c, "aligned")["label"] == "zeros + 3 question rounds"


def _workdir(root, name: str, runs: dict) -> str:
  """A finished evaluate stage holding `runs` (run -> (label, kind, align_user, right)), as the
  report reads it: 4 users x 2 questions, the first `right` answered right."""
  workdir = os.path.join(root, name)
  for run, (label, kind, user, right) in runs.items():
    os.makedirs(os.path.join(workdir, "evaluate", run))
    atomic.write_json(os.path.join(workdir, "evaluate", run, workdir_lib.RESULT),
                      {"run": run, "label": label, "kind": kind, "align_user": user, "scores": {"official": {}}})
    with open(os.path.join(workdir, "evaluate", run, "predictions.jsonl"), "w") as f:
      for n in range(8):
        f.write(json.dumps({"user": f"u{n // 2}", "question": f"q{n % 2}", "task": "SI", "answer": "gold",
                            "prediction": "gold" if n < right else "other"}) + "\n")
  atomic.write_json(os.path.join(workdir, "evaluate", workdir_lib.RESULT), {"runs": {r: {} for r in runs}})
  return workdir


def test_a_report_tells_two_workdirs_of_one_recipe_apart_the_same_way_in_every_seed(tmp_path):
  # e.g. a report of a recipe that includes the plain trained run: both aligned models are "trmpp"
  runs = {"aligned": ("trmpp", "method", "encoder", 4), "shuffled_user": ("shuffled_user", "control", "encoder", 2)}
  first, second = _workdir(tmp_path, "more-s1", runs), _workdir(tmp_path, "plain-s1", runs)
  labels = [r["label"] for r in tables.collect([first, second])]
  assert labels == ["trmpp", "shuffled_user", "trmpp (plain)", "shuffled_user of trmpp (plain)"]


def test_the_verdict_finds_controls_by_what_they_are_not_by_their_label(tmp_path):
  # A recipe's report including its own zeros control (labelled after the recipe), the plain
  # trained run and the plain zeros control. The recipe is judged against its own shuffled_user
  # and its own zeros; the plain run against its own shuffled_user and the plain zeros, never the
  # recipe's (trained on other data).
  recipe = _workdir(tmp_path, "more", {"aligned": ("trmpp + 3 question rounds", "method", "encoder", 8),
                                       "shuffled_user": ("shuffled_user", "control", "encoder", 7)})
  recipe_zeros = _workdir(tmp_path, "more_zeros", {"aligned": ("zeros + 3 question rounds", "control", "zeros", 6)})
  plain = _workdir(tmp_path, "plain", {"aligned": ("trmpp", "method", "encoder", 5),
                                       "shuffled_user": ("shuffled_user", "control", "encoder", 1)})
  plain_zeros = _workdir(tmp_path, "zeros", {"aligned": ("zeros", "control", "zeros", 4)})
  results = tables.collect([recipe, plain_zeros, recipe_zeros, plain])
  lines = tables.verdict(results, tables.comparisons(results, samples=20)).splitlines()
  mine = next(l for l in lines if "trmpp + 3 question rounds " in l)
  theirs = next(l for l in lines if l.split("): ")[1].startswith("trmpp does") or l.split("): ")[1].startswith("trmpp BEATS"))
  assert "shuffled_user (+12.5%" in mine and "zeros + 3 question rounds (+25.0%" in mine  # 8 vs 7, 8 vs 6 of 8
  assert "shuffled_user of trmpp (+50.0%" in theirs and "zeros (+12.5%" in theirs  # 5 vs 1, 5 vs 4
  # without its own zeros control the recipe falls back to the plain one, never to none
  results = tables.collect([recipe, plain_zeros])
  assert "zeros (+50.0%" in tables.verdict(results, tables.comparisons(results, samples=20))
