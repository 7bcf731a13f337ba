"""MovieLens (any release, or ml-100k from the `recbole` wheel) in the official UQABench format.

Mapping onto the schema: item id -> movie; `cate` -> genres (a bag: a movie has several);
`brand` -> release decade ("1990s"); `shop` and `seller` -> empty bags (the data has no such
field). Text: title (with year), genre names, decade. Each user's ratings, sorted by time and,
within the same second, by the file's row order, are the click history; the rating times go to
the optional `uni_seq_timestamp` column. QA asks about decade and genre (genres used whole:
see `qa`); AP, LI, SI and IT about genre only. A user whose last two ratings share a second has no well-defined
next item: `build.write_dataset` leaves IP/AP out for them and counts them.

Folder layouts (RecBole atomic files, GroupLens 100k / 1M / 10M / 20M+): `movielens_files`.
"""

import collections
import importlib.util
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uqa_jax.data import build
from uqa_jax.data import movielens_files
from uqa_jax.data import schema
from uqa_jax.data.catalog import Catalog

WHEEL, PACKAGE, FOLDER = "recbole", "recbole", "dataset_example/ml-100k"
QA_ATTRS = ("brand", "cate")
# AP, LI and SI ask about genre only: 1990s films are most of ml-100k, so "1990s" alone would
# answer about half of the decade questions.
INTEREST_ATTRS = ("cate",)
ATTR_WORDS = {"cate": ("genre", "genres"), "brand": ("decade", "decades"),
              "shop": ("shop", "shops"), "seller": ("seller", "sellers")}


def ml100k_dir() -> pathlib.Path:
  """The ml-100k folder inside the installed `recbole` wheel (its package is never imported)."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"MovieLens needs the `{WHEEL}` wheel: `pip install --no-deps {WHEEL}`, "
                            f"or a folder holding a MovieLens release (data.path / --source)")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / FOLDER
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: missing from the `{WHEEL}` wheel")
  return folder


def _catalog(movies: movielens_files.Movies) -> Catalog:
  genres, decades = [""], [""]
  genre_id, decade_id = {}, {}
  n = len(movies.ids)
  side = {t: [()] * (n + 1) for t in ("cate", "brand", "shop", "seller")}
  copies = collections.Counter(movies.titles)
  seen = collections.Counter()
  titles = [""]
  for i, (title, year, names) in enumerate(zip(movies.titles, movies.years, movies.genres), start=1):
    seen[title] += 1
    # Every copy of a repeated title is numbered "[k of n]", so no copy is a prefix of another.
    titles.append(f"{title} [{seen[title]} of {copies[title]}]" if copies[title] > 1 else title)
    bag = []
    for g in dict.fromkeys(names):
      if g not in genre_id:
        genre_id[g] = len(genres)
        genres.append(g)
      bag.append(genre_id[g])
    side["cate"][i] = tuple(bag)
    if year.isdigit():
      d = f"{int(year) // 10 * 10}s"
      if d not in decade_id:
        decade_id[d] = len(decades)
        decades.append(d)
      side["brand"][i] = (decade_id[d],)
  return Catalog(titles=titles, side=side,
                 names={"cate": genres, "brand": decades, "shop": [""], "seller": [""]},
                 attr_words=ATTR_WORDS, language="en")


def load(folder=None):
  """Returns (catalog, histories, their times in seconds, stats) for the release in `folder`.

  Histories are item-id arrays (catalog ids 1..N) sorted by time, ties by file row order;
  users are in order of their raw ids (numeric where all are numbers). Ratings of movies missing from
  the movie table are skipped and counted.
  """
  folder = pathlib.Path(folder) if folder else ml100k_dir()
  layout, movies, ratings = movielens_files.read(folder)
  duplicates = len(movies.ids) - len(set(movies.ids))
  if duplicates:
    raise ValueError(f"MovieLens source {folder}: {duplicates} repeated movie ids in the movie table")
  item_idx = pc.index_in(ratings.items, value_set=pa.array(movies.ids, pa.string()))
  known = item_idx.is_valid().to_numpy(zero_copy_only=False)
  items = item_idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
  encoded = pc.dictionary_encode(ratings.users)
  names = encoded.dictionary.to_pylist()
  key = [int(u) for u in names] if all(u.isdigit() for u in names) else names
  rank = np.empty(len(names), np.int64)
  rank[sorted(range(len(names)), key=key.__getitem__)] = np.arange(len(names))
  users = rank[encoded.indices.to_numpy(zero_copy_only=False)]
  rows = np.arange(items.size)
  users, items, times, rows = users[known], items[known], ratings.times[known], rows[known]
  order = np.lexsort((rows, times, users))  # by user, then time, then file row
  users, items, times = users[order], items[order], times[order]
  splits = np.flatnonzero(np.diff(users)) + 1
  histories = np.split(items, splits)
  clocks = np.split(times, splits)
  stats = {"layout": layout, "ratings": int(known.size), "users": int(len(histories)),
           "movies": len(movies.ids), "ratings_of_unknown_movies": int((~known).sum())}
  return _catalog(movies), histories, clocks, stats


def build_dataset(out_dir: str, tokenizer, tokenizer_name: str, *, source=None, seed: int = 0,
                  filters: build.Filters = build.Filters(), align_eval_fraction: float = 0.1,
                  language: str = "en", max_len: int = schema.MAX_LEN, train_questions: int = 1,
                  log=print) -> dict:
  """Reads the release in `source` (default: ml-100k from the recbole wheel) and writes it."""
  if language != "en":
    raise ValueError(f"MovieLens titles and genres are English; language {language!r} is not supported")
  folder = pathlib.Path(source) if source else ml100k_dir()
  catalog, histories, times, read_stats = load(folder)
  log(f"movielens: {folder}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                           for k, v in read_stats.items()))
  histories, times, kept, stats = build.filter_interactions(histories, filters, times)
  log("movielens: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
  return build.write_dataset(
      out_dir, name=f"movielens-{folder.name}", source="movielens",
      catalog=catalog.remap_items(kept), histories=histories, times=times, tokenizer=tokenizer,
      tokenizer_name=tokenizer_name, qa_attrs=QA_ATTRS, interest_attrs=INTEREST_ATTRS, seed=seed, max_len=max_len,
      align_eval_fraction=align_eval_fraction, train_questions=train_questions, log=log,
      extra_info={"filter_stats": stats, "read_stats": read_stats, "source_dir": str(folder),
                  "license": "MovieLens data: GroupLens research terms"})
