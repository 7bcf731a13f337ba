"""ranked_all's candidate sets on files in the official format: Chinese questions, no `task` column
(tasks by the official substring rule), no click times, dataset_info.json derived as for a Kaggle
download (`official.prepare`). The sets must keep their rules on any data set, not only ours."""

import collections
import os
import re

import pyarrow as pa
import pytest

from tests.conftest import SMALL
from uqa_jax.data import official
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.data import synthetic
from uqa_jax.evaluation import candidates
from uqa_jax.evaluation import questions as questions_lib

K = 10


def _group(q) -> tuple:
  """By hand, for the Chinese templates: the sub-task, the question with 「quoted」 values and
  numbers masked, and how many list items (、) and trajectory steps (->) the gold joins."""
  template = re.sub(r"\d+", "#", re.sub(r"「[^」]*」", "「」", q.question))
  return q.task, template, q.answer.count("、"), q.answer.count(" -> ")


def _strip_to_official(directory: str) -> dict[str, list[str]]:
  """Drops our own columns and dataset_info.json; returns each align file's task column."""
  tasks = {}
  for name in schema.ALL_FILES:
    path = os.path.join(directory, name)
    table = pa.ipc.open_file(path).read_all()
    if schema.TASK_COLUMN in table.column_names:
      tasks[name] = table.column(schema.TASK_COLUMN).to_pylist()
    table = table.drop_columns([c for c in (schema.TASK_COLUMN, schema.TIME_COLUMN) if c in table.column_names])
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
      writer.write_table(table)
  os.remove(os.path.join(directory, schema.DATASET_INFO))
  return tasks


@pytest.fixture(scope="module")
def official_questions(tmp_path_factory, tokenizer):
  out = str(tmp_path_factory.mktemp("official-zh"))
  cfg = synthetic.SyntheticConfig(**{**SMALL.__dict__, "language": "zh"})
  # 3 rounds of questions per align-train user: a user asked one template twice has two own golds
  synthetic.build_dataset(out, cfg, tokenizer, "smollm2", train_questions=3, log=lambda *_: None)
  generated = _strip_to_official(out)
  info = official.prepare(out, log=lambda *_: None)
  assert info["language"] == "zh"
  name = schema.file_name("align", "train")  # more questions than the eval split: every template holds others
  path = os.path.join(out, name)
  assert schema.TASK_COLUMN not in pa.ipc.open_file(path).schema.names
  qs, _, language = questions_lib.load(path, pipeline.InputConfig(max_len=512, max_text_len=512, max_answer_len=256),
                                       tokenizer)
  assert language == "zh"
  return qs, generated[name]


def test_tasks_come_from_the_official_rule_and_match_the_generator(official_questions):
  qs, generated = official_questions
  assert [q.task for q in qs] == generated
  assert set(generated) == set(schema.TASKS)


def test_official_format_sets_keep_every_rule(official_questions):
  """Gold present, no duplicates, IP/AP exactly their listed candidates (parsed here from the
  question text), other distractors other users' golds of the same sub-task, template and form
  (grouped here by hand), never the asking user's own gold of that group; every sub-task scored."""
  qs, _ = official_questions
  sets = candidates.draw(qs, K, seed=0)
  golds = collections.defaultdict(set)  # group -> golds
  own = collections.defaultdict(set)  # (group, user) -> that user's golds
  for q in qs:
    golds[_group(q)].add(q.answer)
    own[_group(q), q.user].add(q.answer)
  scored = collections.Counter()
  for q, options in zip(qs, sets):
    if not options:
      continue
    scored[q.task] += 1
    assert q.answer in options and len(set(options)) == len(options), (q.row, options)
    if q.task in ("IP", "AP"):
      listed = q.question.split("候选：", 1)[1].split("；")
      assert list(options) == listed, (q.row, q.question)
      continue
    assert len(options) <= K
    for other in options:
      if other != q.answer:
        assert other in golds[_group(q)], (q.row, q.question, other)
        assert other not in own[_group(q), q.user], (q.row, other)
  assert set(scored) == set(schema.TASKS), scored
  assert sum(len(o) == K for q, o in zip(qs, sets) if q.task not in ("IP", "AP")) > 0  # some full sets


def test_official_format_sets_are_seeded_per_question_not_by_order(official_questions):
  qs, _ = official_questions
  sets = dict(zip((q.row for q in qs), candidates.draw(qs, K, seed=0)))
  backwards = list(reversed(qs))
  assert dict(zip((q.row for q in backwards), candidates.draw(backwards, K, seed=0))) == sets
  other_seed = dict(zip((q.row for q in qs), candidates.draw(qs, K, seed=1)))
  assert sum(other_seed[r] != sets[r] for r in sets) > len(sets) // 4  # the seed moves the draws
