"""MovieLens-100k from the recbole wheel imports into a data set the checker accepts."""

import collections
import json
import re
import os

import numpy as np
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.data import movielens_files
from uqa_jax.data import pipeline
from uqa_jax.data import schema


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory, tokenizer):
  out = str(tmp_path_factory.mktemp("ml100k"))
  movielens.build_dataset(out, tokenizer, "smollm2", log=lambda *_: None)
  return out


def test_import_passes_the_checker(ml_dir):
  report = checker.check_directory(ml_dir)
  assert report.ok, report.format()
  info = arrow_io.read_dataset_info(ml_dir)
  assert info["read_stats"]["ratings"] == 100_000 and info["read_stats"]["users"] == 943
  assert info["counts"]["pretrain_data_eval.arrow"] == info["num_users"] > 900
  assert {k.split("/")[1] for k in info["qa_per_task"]} == set(schema.TASKS)


def test_genres_are_bags_and_missing_fields_are_empty(ml_dir):
  f = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  genres = [len(b) for r in range(20) for b in f.bags(r, "uni_seq_cate_id").to_lists()]
  assert max(genres) > 1  # multi-genre movies
  assert all(b == [] for b in f.bags(0, "uni_seq_shop_id").to_lists())
  assert f.bags(0, "uni_seq_title_bpe_token_ids").ids.size > 0


def test_histories_are_in_time_order_ties_in_file_order(ml_dir):
  """User 1's ratings: by timestamp, and within one second in the order of ml-100k.inter's rows."""
  catalog, histories, times, _ = movielens.load()
  inter = (movielens.ml100k_dir() / "ml-100k.inter").read_text().splitlines()[1:]
  rows = [l.split("\t") for l in inter if l.split("\t")[0] == "1"]
  expected = sorted(range(len(rows)), key=lambda n: (float(rows[n][3]), n))  # stable: row order
  titles = [re.sub(r" \[\d+ of \d+\]$", "", catalog.titles[i]) for i in histories[0]]  # repeats numbered
  movie_titles = {}
  for line in (movielens.ml100k_dir() / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]:
    f = line.split("\t")
    movie_titles[f[0]] = f"{f[1]} ({f[2]})" if f[2].isdigit() else f[1]
  assert titles == [movie_titles[rows[n][1]] for n in expected]
  np.testing.assert_array_equal(times[0], [int(float(rows[n][3])) for n in expected])
  assert all(np.all(np.diff(t) >= 0) for t in times)


def test_files_carry_the_rating_times(ml_dir):
  f = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  assert f.has_time
  for row in range(len(f)):
    t = f.timestamps(row)
    assert t.size == f.bags(row, "uni_seq_item_id").num_steps and np.all(np.diff(t) >= 0)
  assert arrow_io.read_dataset_info(ml_dir)["has_timestamps"]


def test_pipeline_runs_unchanged_on_it(ml_dir, tokenizer):
  cfg = pipeline.InputConfig(batch_size=16, max_len=64, num_epochs=1)
  b = next(iter(pipeline.make_dataset(os.path.join(ml_dir, "align_data_train.arrow"), cfg,
                                      tokenizer=tokenizer, process_index=0, process_count=1)))
  assert b["uni_seq_cate_id"].shape == (16, 64, 4) and b["input_ids"].shape == (16, 192)


# --- Genres used whole; the held-out click well defined. -------------------------------------

def _steps(f, row, column, names):
  return [[names[i] for i in bag] for bag in f.bags(row, column).to_lists()]


def test_every_answer_follows_the_rules_genres_whole(ml_dir, tokenizer):
  """Every question of the import, recomputed from the row: DF lists all genres alphabetically;
  MF counts every click carrying the genre (or decade); LI/SI/IT rank genres by clicks carrying
  them (then recency, then name); AP's gold is one of the next movie's genres and no distractor
  is any of them; IP's gold is the same user's held-out movie."""
  from tests.unit.data.test_qa import _ranked, _thirds
  catalog, _, _, _ = movielens.load()
  genres, decades = catalog.names["cate"], catalog.names["brand"]
  dec = lambda ids: tokenizer.decode(ids, clean_up_tokenization_spaces=False)
  pre = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  following = {tuple(pre.bags(r, schema.ITEM_COLUMN).ids[:-1]): r for r in range(len(pre))}
  seen = collections.Counter()
  for split in schema.SPLITS:
    f = arrow_io.SequenceFile(os.path.join(ml_dir, schema.file_name("align", split)))
    for r in range(len(f)):
      question, answer = (m["content"] for m in json.loads(f.text(r)))
      g = _steps(f, r, "uni_seq_cate_id", genres)
      d = _steps(f, r, "uni_seq_brand_id", decades)
      titles = [dec(b) for b in f.bags(r, "uni_seq_title_bpe_token_ids").to_lists()]
      p = following[tuple(f.bags(r, schema.ITEM_COLUMN).ids)]  # the same user's full sequence
      if m := re.search(r"all the genres of item number (\d+)", question):
        assert answer == ", ".join(sorted(g[int(m.group(1)) - 1])), question
      elif m := re.search(r"What is the decade of item number (\d+)", question):
        assert answer == d[int(m.group(1)) - 1][0]
      elif m := re.search(r"titles of the last (\d) items", question):
        assert answer == ", ".join(titles[-int(m.group(1)):])
      elif m := re.search(r'items have (genre|decade) "(.*)"\?$', question):
        steps = g if m.group(1) == "genre" else d
        assert answer == str(sum(m.group(2) in step for step in steps))
      elif "How long is the user's click history" in question:
        assert answer == str(len(titles))
      elif "top 3 genres" in question:
        assert answer == ", ".join(_ranked(g)[:3])
      elif "Which genre is the user most interested in recently" in question:
        assert answer == _ranked(g[-10:])[0]
      elif "genre preference shifted" in question:
        path = []
        for part in _thirds(g):
          top = _ranked(part)[:1]
          if top and (not path or path[-1] != top[0]):
            path += top
        assert answer == " -> ".join(path)
      elif "What is the genre of the item the user will most likely click next" in question:
        true = set(_steps(pre, p, "uni_seq_cate_id", genres)[-1])
        candidates = question.split("Candidates: ")[1].split("; ")
        assert answer in true and answer in candidates
        assert not (set(candidates) - {answer}) & true, (candidates, true)
        seen["AP multi"] += len(true) > 1
      elif "Which item will the user most likely click next" in question:
        assert answer == dec(pre.bags(p, "uni_seq_title_bpe_token_ids").to_lists()[-1])
        assert answer in question.split("Candidates: ")[1].split("; ")
      else:
        raise AssertionError(f"no rule recomputes {question!r}")
      seen[f.task(r)] += 1
  assert all(seen[t] > 20 for t in schema.TASKS), seen
  assert seen["AP multi"] > 20  # the rule is exercised on movies with several genres


def test_tied_held_out_clicks_get_no_item_or_attribute_prediction(ml_dir):
  info = arrow_io.read_dataset_info(ml_dir)
  pre = arrow_io.SequenceFile(os.path.join(ml_dir, "pretrain_data_eval.arrow"))
  tied = {tuple(pre.bags(r, schema.ITEM_COLUMN).ids[:-1]) for r in range(len(pre))
          if pre.timestamps(r)[-1] == pre.timestamps(r)[-2]}
  assert info["ip_ap_skipped_tied_next"] == len(tied) > 300  # ml-100k: 415 of 943 users
  predicted = set()
  for split in schema.SPLITS:
    f = arrow_io.SequenceFile(os.path.join(ml_dir, schema.file_name("align", split)))
    predicted |= {tuple(f.bags(r, schema.ITEM_COLUMN).ids) for r in range(len(f))
                  if f.task(r) in ("IP", "AP")}
  assert predicted and not predicted & tied


# --- Any release, from a folder. ---------------------------------------------------------

MOVIES = [("10", "Heat (1995)", ["Action", "Crime", "Thriller"]), ("20", "Casino (1995)", ["Drama"]),
          ("30", "Babe (1995)", ["Children's", "Comedy"]), ("40", "Brazil (1985)", ["Sci-Fi"])]
# (user, movie, time) in file order; user 7's last two share a second (kept in row order).
RATINGS = [("7", "30", 50), ("5", "10", 100), ("7", "10", 10), ("5", "20", 90), ("7", "40", 50),
           ("5", "40", 200), ("7", "20", 20)]
EXPECTED = {"5": ["Casino (1995)", "Heat (1995)", "Brazil (1985)"],
            "7": ["Heat (1995)", "Casino (1995)", "Babe (1995)", "Brazil (1985)"]}


def _write_recbole(d):
  (d / "ml-tiny.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
                                  + "".join(f"{i}\t{t[:-7]}\t{t[-5:-1]}\t{' '.join(g)}\n" for i, t, g in MOVIES))
  (d / "ml-tiny.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                   + "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in RATINGS))


def _write_dat(d):
  (d / "movies.dat").write_bytes("".join(f"{i}::{t}::{'|'.join(g)}\n" for i, t, g in MOVIES).encode("latin-1"))
  (d / "ratings.dat").write_text("".join(f"{u}::{i}::4::{t}\n" for u, i, t in RATINGS))


def _write_csv(d):
  (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(
      f'{i},"{t}",{"|".join(g)}\n' for i, t, g in MOVIES))
  (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
      f"{u},{i},4.0,{t}\n" for u, i, t in RATINGS))


def _write_ml100k(d):
  names = movielens_files.ML100K_GENRES
  (d / "u.item").write_bytes("".join(
      f"{i}|{t}|01-Jan-{t[-5:-1]}||http://x|" + "|".join("1" if n in g else "0" for n in names) + "\n"
      for i, t, g in MOVIES).encode("latin-1"))
  (d / "u.data").write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in RATINGS))


@pytest.mark.parametrize("layout,write", [("recbole", _write_recbole), ("dat", _write_dat),
                                          ("csv", _write_csv), ("ml-100k", _write_ml100k)])
def test_folder_layouts_read_the_same_histories(tmp_path, layout, write):
  write(tmp_path)
  catalog, histories, times, stats = movielens.load(tmp_path)
  assert stats["layout"] == layout and stats["ratings"] == len(RATINGS)
  assert [[catalog.titles[i] for i in h] for h in histories] == [EXPECTED["5"], EXPECTED["7"]]
  np.testing.assert_array_equal(times[1], [10, 20, 50, 50])
  heat = catalog.titles.index("Heat (1995)")
  assert sorted(catalog.names["cate"][g] for g in catalog.side["cate"][heat]) == ["Action", "Crime", "Thriller"]
  assert catalog.names["brand"][catalog.side["brand"][catalog.titles.index("Brazil (1985)")][0]] == "1980s"


def test_unknown_folder_lists_what_it_looked_for(tmp_path):
  (tmp_path / "readme.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match=r"u.data \+ u.item.*ratings.dat \+ movies.dat.*readme.txt"):
    movielens.load(tmp_path)


def test_cli_imports_a_folder_and_checks_it(tmp_path, tokenizer):
  """`python -m data_prep.movielens OUT --source DIR` on a GroupLens `::` folder."""
  from data_prep import movielens as cli
  src = tmp_path / "src"
  src.mkdir()
  _write_dat(src)
  # Enough users for the filters (10 clicks each, items rated 3+ times) from the tiny catalog.
  more = "".join(f"{u}::{['10', '20', '30', '40'][k % 4]}::4::{1000 * u + k}\n"
                 for u in range(100, 130) for k in range(12))
  (src / "ratings.dat").write_text((src / "ratings.dat").read_text() + more)
  assert cli.main([str(tmp_path / "out"), "--source", str(src)]) == 0
  info = arrow_io.read_dataset_info(str(tmp_path / "out"))
  assert info["read_stats"]["layout"] == "dat" and info["num_users"] == 30
