"""A run's label names what its alignment adds to the default recipe, so a report that includes
several runs of one encoder (trained, + contrast, + reconstruction) tells them apart, and two
workdirs of the same recipe are told apart by their names."""

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
  """A finished evaluate stage holding `runs` (run -> label), as the report reads it."""
  workdir = os.path.join(root, name)
  for run, label in runs.items():
    os.makedirs(os.path.join(workdir, "evaluate", run))
    atomic.write_json(os.path.join(workdir, "evaluate", run, workdir_lib.RESULT), {"run": run, "label": label})
    open(os.path.join(workdir, "evaluate", run, "predictions.jsonl"), "w").close()
  atomic.write_json(os.path.join(workdir, "evaluate", workdir_lib.RESULT), {"runs": {r: {} for r in runs}})
  return workdir


def test_a_report_tells_two_workdirs_of_one_recipe_apart(tmp_path):
  # e.g. a report of a recipe that includes the plain trained run: both aligned models are "trmpp"
  first = _workdir(tmp_path, "more", {"aligned": "trmpp", "shuffled_user": "shuffled_user"})
  second = _workdir(tmp_path, "plain", {"aligned": "trmpp", "shuffled_user": "shuffled_user"})
  labels = [r["label"] for r in tables.collect([first, second])]
  assert labels == ["trmpp", "shuffled_user", "trmpp (plain)", "shuffled_user of trmpp (plain)"]


def _comp(method_dir, other_dir, other_run, other_user, other_label, difference):
  return {"method": "m", "method_dir": method_dir, "other": other_label, "other_dir": other_dir,
          "other_run": other_run, "other_user": other_user, "variant": "official", "difference": difference,
          "ci": (difference - 0.01, difference + 0.01), "p_value": 0.01}


def test_the_verdict_finds_controls_by_what_they_are_not_by_their_label():
  # a recipe's report: its zeros control is labelled after the recipe, and an included plain run's
  # own shuffled_user after that run; neither may read as "not run", nor be taken for the other's
  mine, plain = "/w/recipe/evaluate/aligned", "/w/plain/evaluate/aligned"
  method = {"kind": "method", "label": "trmpp + reconstruction", "dir": mine, "scores": {"official": {}}}
  included = {"kind": "method", "label": "trmpp (plain)", "dir": plain, "scores": {"official": {}}}
  comps = [_comp(mine, "/w/recipe/evaluate/shuffled_user", "shuffled_user", "encoder", "shuffled_user", 0.03),
           _comp(mine, "/w/zeros/evaluate/aligned", "aligned", "zeros", "zeros + reconstruction", 0.04),
           _comp(mine, plain, "aligned", "encoder", "trmpp (plain)", 0.05),
           _comp(plain, "/w/recipe/evaluate/shuffled_user", "shuffled_user", "encoder", "shuffled_user", 0.07),
           _comp(plain, "/w/plain/evaluate/shuffled_user", "shuffled_user", "encoder", "shuffled_user of trmpp (plain)", -0.02)]
  first, second = tables.verdict([method, included], comps).splitlines()
  assert "BEATS shuffled_user (+3.0%" in first and "BEATS zeros + reconstruction (+4.0%" in first
  # the plain run's shuffled_user is its own (-2.0%), not the recipe's (+7.0%); it has no zeros here
  assert "does not beat shuffled_user of trmpp (plain) (-2.0%" in second and "zeros: not run" in second
