"""The synthetic generator: deterministic per seed, and its planted structure shows in the data."""

import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from uqa_jax.data import qa
from uqa_jax.data import schema
from uqa_jax.data import synthetic
from tests.conftest import ROOT
from tests.conftest import SMALL


def test_more_train_questions_keep_the_eval_questions_and_the_first_round(tmp_path, tokenizer, en_dir):
  """`train_questions=3`: align eval is the one-round data set's, byte for byte; align train holds
  every one-round question of each user and more, none twice for one user; the repeats dropped
  are counted."""
  from uqa_jax.data import arrow_io
  more = tmp_path / "more"
  lines = []
  info = synthetic.build_dataset(str(more), SMALL, tokenizer, "smollm2", train_questions=3, log=lines.append)
  for name in (schema.file_name("align", "eval"), schema.file_name("pretrain", "train")):
    assert pa.ipc.open_file(os.path.join(en_dir, name)).read_all().equals(
        pa.ipc.open_file(str(more / name)).read_all()), name

  def by_user(directory):
    f = arrow_io.SequenceFile(os.path.join(directory, schema.file_name("align", "train")))
    out = {}
    for r in range(len(f)):
      out.setdefault(f.row(r)[schema.ITEM_COLUMN].ids.tobytes(), []).append(f.text(r))
    return out

  one, three = by_user(en_dir), by_user(str(more))
  assert set(one) == set(three)
  for user, texts in one.items():
    assert set(texts) <= set(three[user]) and len(set(three[user])) == len(three[user])
  rows = sum(map(len, three.values()))
  assert rows > 2 * sum(map(len, one.values()))
  assert info["train_questions"] == 3 and info["counts"][schema.file_name("align", "train")] == rows
  assert f"3 QA rounds per align-train user: {info['train_questions_repeated_dropped']:,} questions" in " ".join(lines)


def test_same_seed_same_files_other_seed_other_data(tmp_path, tokenizer, en_dir):
  again = tmp_path / "again"
  synthetic.build_dataset(str(again), SMALL, tokenizer, "smollm2", log=lambda *_: None)
  for name in schema.ALL_FILES:
    a = pa.ipc.open_file(os.path.join(en_dir, name)).read_all()
    b = pa.ipc.open_file(str(again / name)).read_all()
    assert a.equals(b), name
  _, h1, _ = synthetic.generate(SMALL)
  _, h2, _ = synthetic.generate(synthetic.SyntheticConfig(**{**SMALL.__dict__, "seed": 1}))
  assert any(len(a) != len(b) or (a != b).any() for a, b in zip(h1, h2))


def test_long_term_top_category_is_recoverable_from_counts():
  catalog, histories, plans = synthetic.generate(SMALL)
  cates = np.array([catalog.label("cate", i) for i in range(catalog.num_items + 1)])
  in_top3 = [qa.ranked_values(cates[h])[0] in p["long_term"] for h, p in zip(histories, plans)]
  top1 = [qa.ranked_values(cates[h])[0] == p["long_term"][0] for h, p in zip(histories, plans)]
  assert np.mean(in_top3) > 0.9
  assert np.mean(top1) > 0.5  # Dirichlet weights are sometimes close; still far above 1/12


def test_short_term_interest_dominates_the_recent_window():
  catalog, histories, plans = synthetic.generate(SMALL)
  cates = np.array([catalog.label("cate", i) for i in range(catalog.num_items + 1)])
  hits = [qa.ranked_values(cates[h[-SMALL.short_window:]])[0] == p["short_term"]
          for h, p in zip(histories, plans)]
  assert np.mean(hits) > 0.7


def test_brand_trajectory_moves_from_first_to_last_planted_brand():
  """Within the top category, the brand clicked most moves along the planted path A -> ... -> C."""
  catalog, histories, plans = synthetic.generate(SMALL)
  brands = np.array([catalog.label("brand", i) for i in range(catalog.num_items + 1)])
  cates = np.array([catalog.label("cate", i) for i in range(catalog.num_items + 1)])
  first, last = [], []
  for h, p in zip(histories, plans):
    if len(p["trajectory"]) < 2:
      continue
    in_top = h[cates[h] == p["long_term"][0]]
    if len(in_top) < 6:
      continue
    parts = np.array_split(brands[in_top], 3)
    first.append(qa.ranked_values(parts[0])[0] == p["trajectory"][0])
    last.append(qa.ranked_values(parts[-1])[0] == p["trajectory"][-1])
  assert len(first) > 40 and np.mean(first) > 0.7 and np.mean(last) > 0.7


def test_repeats_and_varied_lengths():
  _, histories, _ = synthetic.generate(SMALL)
  lengths = np.array([len(h) for h in histories])
  assert lengths.min() >= SMALL.min_len and lengths.max() <= SMALL.max_len and lengths.std() > 10
  repeats = np.mean([len(h) - len(np.unique(h)) > 0 for h in histories])
  assert repeats > 0.9


def test_names_are_prefix_free_so_startswith_scoring_is_fair():
  for language in ("en", "zh"):
    catalog, _, _ = synthetic.generate(synthetic.SyntheticConfig(**{**SMALL.__dict__, "language": language}))
    for names in [catalog.titles[1:], *(catalog.names[t][1:] for t in ("cate", "brand", "shop"))]:
      s = sorted(names)
      assert len(set(s)) == len(s)
      assert not any(b.startswith(a) for a, b in zip(s, s[1:])), language


def test_filters_drop_rare_items_and_report_counts(tokenizer, en_dir):
  import json
  info = json.load(open(os.path.join(en_dir, "dataset_info.json")))
  stats = info["filter_stats"]
  assert stats["clicks_in"] - stats["clicks_dropped_rare_items"] == stats["clicks_out"]
  counts = np.bincount(np.concatenate(
      [pa.ipc.open_file(os.path.join(en_dir, "pretrain_data_eval.arrow")).read_all()
       .column(schema.ITEM_COLUMN).combine_chunks().flatten().flatten().to_numpy()]))
  assert info["vocab_sizes"]["item"] == info["num_items"] + 1
  assert counts[0] == 0  # no padding id inside histories


def test_click_times_are_sessions_in_order(en_dir):
  _, histories, _ = synthetic.generate(SMALL)
  times = synthetic.click_times(SMALL, [len(h) for h in histories])
  assert [len(t) for t in times] == [len(h) for h in histories]
  assert all(np.all(np.diff(t) >= 0) and t[-1] == synthetic.END_TIME for t in times)
  gaps = np.concatenate([np.diff(t) for t in times])
  assert np.median(gaps) < 600 and gaps.max() > 24 * 3600  # short in-session gaps, long breaks
  f = pa.ipc.open_file(os.path.join(en_dir, "pretrain_data_eval.arrow")).read_all()
  for items, clicks in zip(f.column(schema.ITEM_COLUMN).to_pylist(), f.column(schema.TIME_COLUMN).to_pylist()):
    assert len(items) == len(clicks) and clicks == sorted(clicks)


@pytest.mark.parametrize("field, value, why", [("num_users", 0, "num_users=0; expected at least 1"),
                                               ("num_users", -5, "num_users=-5; expected at least 1"),
                                               ("p_noise", 1.5, "p_noise=1.5; expected a probability"),
                                               ("min_len", 50, "min_len=50 > max_len=10")])
def test_settings_that_make_no_valid_user_are_refused_by_name(field, value, why):
  with pytest.raises(ValueError, match=re.escape(why)):
    synthetic.SyntheticConfig(**{field: value, **({"max_len": 10} if field == "min_len" else {})})


def test_the_generator_command_refuses_them_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "data_prep.synthetic", str(tmp_path / "d"), "--num-users", "-5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and "--num-users=-5; expected at least 1" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "d").exists()


def test_train_questions_are_part_of_the_data_recipe_and_refused_for_official_files():
  from configs import smoke
  from uqa_jax.data.config import DataConfig
  from uqa_jax.stages import data as data_stage
  config = smoke.get_config()
  assert "train_questions" not in data_stage.fingerprint(config)["data"]  # 1: as before it existed
  config.data.train_questions = 3
  assert data_stage.fingerprint(config)["data"]["train_questions"] == 3
  with pytest.raises(ValueError, match="train_questions=2 with source='official': the official files come"):
    DataConfig(source="official", train_questions=2)
