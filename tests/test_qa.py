"""QA generation: every question lands in its own task by the rule; answers and candidates agree."""

import json
import os

import numpy as np
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import qa
from uqa_jax.data import schema


def _rows(directory):
  info = arrow_io.read_dataset_info(directory)
  for split in schema.SPLITS:
    f = arrow_io.SequenceFile(os.path.join(directory, schema.file_name("align", split)))
    for r in range(len(f)):
      user, assistant = json.loads(f.text(r))
      yield info["language"], f.task(r), user["content"], assistant["content"], f, r


def test_every_question_is_classified_into_its_own_task(synthetic_dir):
  """zh: by the official substring rule; en: by our mirror of it. All seven tasks occur."""
  seen = set()
  for language, task, question, _, _, _ in _rows(synthetic_dir):
    assert schema.classify_question(question, language) == task, question
    seen.add(task)
  assert seen == set(schema.TASKS)


def test_gold_answer_is_among_the_candidates(synthetic_dir):
  for language, task, question, answer, _, _ in _rows(synthetic_dir):
    if task in ("IP", "AP"):
      sep = qa.TEMPLATES[language]["candidate_sep"]
      cands = question.split("：" if language == "zh" else "Candidates: ", 1)[1].split(sep)
      assert answer in cands and len(cands) == len(set(cands)) == qa.NUM_CANDIDATES


def test_answers_agree_with_the_history(en_dir):
  for _, task, question, answer, f, r in _rows(en_dir):
    history = f.bags(r, schema.ITEM_COLUMN).ids
    if task == "MF":
      assert int(answer) > 0  # the paper discards MF questions whose answer is 0
      if "How long" in question:
        assert int(answer) == len(history)
    if task == "DF" and "last" in question:
      k = int(question.split("last ")[1].split()[0])
      assert 1 <= k < 4 and len(answer.split(", ")) >= k
    if task == "IT":
      path = answer.split(qa.TRAJECTORY_SEP)
      assert len(path) >= 2 and all(a != b for a, b in zip(path, path[1:]))


def test_ranked_values_orders_by_count_then_recency():
  assert qa.ranked_values(np.array([1, 2, 2, 3, 1, 0, 0])) == [1, 2, 3]  # 1 and 2 tie: 1 is more recent
  assert qa.ranked_values(np.array([5, 5, 4])) == [5, 4]
  assert qa.ranked_values(np.array([0, 0])) == []


def test_next_item_never_leaks_into_the_history_answers(en_dir):
  """IP's gold title is the held-out next item; align histories end before it."""
  pre = arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_eval.arrow"))
  align = arrow_io.SequenceFile(os.path.join(en_dir, "align_data_train.arrow"))
  full = {tuple(pre.bags(r, schema.ITEM_COLUMN).ids[:-1]) for r in range(len(pre))}
  for r in range(0, len(align), 7):
    assert tuple(align.bags(r, schema.ITEM_COLUMN).ids) in full
