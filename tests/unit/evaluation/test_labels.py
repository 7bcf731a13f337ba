"""A run's label names what its alignment adds to the default recipe, so a report that includes
several runs of one encoder (trained, + contrast, + reconstruction) tells them apart, and two
workdirs of the same recipe are told apart by their names."""

import json
import os

from configs import default
from uqa_jax.evaluation import diagnosis
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


def _workdir(root, name: str, runs: dict, ranked: dict | None = None) -> str:
  """A finished evaluate stage holding `runs` (run -> (label, kind, align_user, right)), as the
  report reads it: 4 users x 2 questions, the first `right` answered right; with `ranked` (run ->
  how many are ranked right, the first ones), each also ranks the gold against one distractor."""
  workdir = os.path.join(root, name)
  for run, (label, kind, user, right) in runs.items():
    os.makedirs(os.path.join(workdir, "evaluate", run))
    atomic.write_json(os.path.join(workdir, "evaluate", run, workdir_lib.RESULT),
                      {"run": run, "label": label, "kind": kind, "align_user": user, "scores": {"official": {"cells": {}}}})
    with open(os.path.join(workdir, "evaluate", run, "predictions.jsonl"), "w") as f:
      for n in range(8):
        record = {"user": f"u{n // 2}", "question": f"q{n % 2}", "task": "SI", "answer": "gold",
                  "prediction": "gold" if n < right else "other"}
        if ranked:
          record.update(ranked_all_candidates=["other", "gold"],
                        ranked_all_prediction="gold" if n < ranked[run] else "other")
        f.write(json.dumps(record) + "\n")
  atomic.write_json(os.path.join(workdir, "evaluate", workdir_lib.RESULT), {"runs": {r: {} for r in runs}})
  return workdir


def _verdict(workdirs: list[str]) -> str:
  results = tables.collect(workdirs)
  return tables.verdict(results, tables.comparisons(results, samples=20))


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
  lines = _verdict([recipe, plain_zeros, recipe_zeros, plain]).splitlines()
  mine = next(l for l in lines if "trmpp + 3 question rounds " in l)
  theirs = next(l for l in lines if l.split("): ")[1].startswith("trmpp does") or l.split("): ")[1].startswith("trmpp BEATS"))
  assert "shuffled_user (+12.5%" in mine and "zeros + 3 question rounds (+25.0%" in mine  # 8 vs 7, 8 vs 6 of 8
  assert "shuffled_user of trmpp (+50.0%" in theirs and "zeros (+12.5%" in theirs  # 5 vs 1, 5 vs 4
  # without its own zeros control the recipe falls back to the plain one, never to none
  assert "zeros (+50.0%" in _verdict([recipe, plain_zeros])


def test_random_encoder_is_found_by_its_input_and_recipe_not_its_label(tmp_path):
  # the seeds tool compares with every control of tables.CONTROLS: a recipe's random_encoder is
  # labelled after the recipe, and the plain one must never stand in for it while it exists
  recipe = _workdir(tmp_path, "rc", {"aligned": ("trmpp + reconstruction", "method", "encoder", 8),
                                     "shuffled_user": ("shuffled_user", "control", "encoder", 7)})
  recipe_random = _workdir(tmp_path, "rc_random", {"aligned": ("random_encoder + reconstruction", "control",
                                                               "random_encoder", 2)})
  plain_random = _workdir(tmp_path, "random", {"aligned": ("random_encoder", "control", "random_encoder", 6)})
  for dirs, want, difference in (([recipe, recipe_random, plain_random], "random_encoder + reconstruction", 0.75),
                                 ([recipe, plain_random], "random_encoder", 0.25)):
    results = tables.collect(dirs)
    mine = [c for c in tables.comparisons(results, samples=20)
            if c["method"] == "trmpp + reconstruction" and c["variant"] == "official"]
    found = tables.against(mine, "random_encoder")
    assert (found["other"], found["difference"]) == (want, difference)
  # the verdict states it beside shuffled_user and zeros: 8 vs 2 of 8 right; absent, "not run"
  line = _verdict([recipe, recipe_random])
  assert "random_encoder + reconstruction (+75.0%" in line and "zeros: not run" in line, line
  assert _verdict([recipe]).endswith("zeros: not run; random_encoder: not run")


def test_the_diagnosis_states_official_and_ranked_all_against_the_own_shuffled_user(tmp_path):
  # official 4 vs 3 of 8 right (+12.5%), ranked_all 7 vs 2 (+62.5%); the included run's own
  # shuffled_user (6 and 6 of 8) is not this model's
  runs = {"aligned": ("trmpp", "method", "encoder", 4), "shuffled_user": ("shuffled_user", "control", "encoder", 3)}
  main = _workdir(tmp_path, "main", runs, ranked={"aligned": 7, "shuffled_user": 2})
  other = _workdir(tmp_path, "other", {"aligned": ("trmpp", "method", "encoder", 6),
                                       "shuffled_user": ("shuffled_user", "control", "encoder", 6)},
                   ranked={"aligned": 6, "shuffled_user": 6})
  results = tables.collect([main, other])
  _, said = diagnosis.diagnosis(main, results, [], tables.comparisons(results, samples=20), samples=20)
  assert "Against shuffled_user: official +12.5% [" in said and "; ranked_all +62.5% [" in said, said
  assert "Lost at: answers" in said  # official within noise on 4 users: the generated answers' level fails
