"""Reading any MovieLens release from a folder, in whichever layout it ships.

Detected from the folder's files (first match wins):
  recbole  `<name>.inter` + `<name>.item`: RecBole atomic files (tab-separated, `field:type`
           header; titles without the year, which is in `release_year`; genres space-separated
           in `class`, `genre` or `type`; title in `movie_title` or `movie_name`)
  ml-100k  `u.data` (tab: user, item, rating, time) + `u.item` (`|`: id, title, dates, URL,
           19 genre flags named by `u.genre`); latin-1
  dat      `ratings.dat` + `movies.dat` (`::`-separated; genres `|`-separated): 1M, 10M
  csv      `ratings.csv` + `movies.csv` (header; quoted titles; genres `|`-separated): 20M, 25M,
           latest

Ratings are read column-wise with `pyarrow.csv` into numpy arrays (no Python object per
rating, so 20M-rating releases fit in memory); only the movie table (tens of thousands of rows)
is parsed line by line.
"""

import csv
import dataclasses
import io
import pathlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

LAYOUTS = {  # layout -> (ratings file, movies file); recbole's names depend on the data set
    "recbole": ("<name>.inter", "<name>.item"),
    "ml-100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
NO_GENRE = {"", "unknown", "(no genres listed)"}  # "no genre": an empty bag, never a genre name
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclasses.dataclass
class Movies:
  """The movie table: raw ids (as strings) with title (year included), year and genre names."""
  ids: list[str]
  titles: list[str]
  years: list[str]  # "" where unknown
  genres: list[list[str]]


@dataclasses.dataclass
class Ratings:
  """One entry per rating, in file row order: raw user and item ids (strings) and time (s)."""
  users: pa.Array
  items: pa.Array
  times: np.ndarray  # int64


def detect(folder: pathlib.Path) -> tuple[str, pathlib.Path, pathlib.Path]:
  """(layout, ratings path, movies path); a clear error lists what was looked for."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"MovieLens source {folder}: not a directory")
  inters = sorted(folder.glob("*.inter"))
  for inter in inters:
    item = inter.with_suffix(".item")
    if item.is_file():
      return "recbole", inter, item
  for layout, (r, m) in LAYOUTS.items():
    if layout != "recbole" and (folder / r).is_file() and (folder / m).is_file():
      return layout, folder / r, folder / m
  wanted = "; ".join(f"{layout}: {r} + {m}" for layout, (r, m) in LAYOUTS.items())
  present = sorted(p.name for p in folder.iterdir())[:20]
  raise FileNotFoundError(f"MovieLens source {folder}: no known layout. Looked for {wanted}. "
                          f"The folder holds: {present}")


def read(folder) -> tuple[str, Movies, Ratings]:
  layout, ratings_path, movies_path = detect(folder)
  return layout, _READ_MOVIES[layout](movies_path), _READ_RATINGS[layout](ratings_path)


def year_of(title: str) -> str:
  match = _YEAR_IN_TITLE.search(title)
  return match.group(1) if match else ""


def _genres(names) -> list[str]:
  return [g for g in names if g not in NO_GENRE]


def _text(path: pathlib.Path, encodings=("utf-8", "latin-1")) -> str:
  data = path.read_bytes()
  for encoding in encodings:
    try:
      return data.decode(encoding)
    except UnicodeDecodeError:
      continue
  raise ValueError(f"{path}: not readable as any of {encodings}")


def _fields(path, line_no, line, sep, expected):
  fields = line.split(sep)
  if len(fields) < expected:
    raise ValueError(f"{path}, line {line_no}: {len(fields)} fields, expected {expected} ({line!r})")
  return fields


# --- movies -------------------------------------------------------------------------------

def _recbole_header(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]


def _pick(header, path, *choices):
  for c in choices:
    if c in header:
      return header.index(c)
  raise ValueError(f"{path}: header {header} has none of the columns {list(choices)}")


def _movies_recbole(path):
  header = _recbole_header(path)
  i_id = _pick(header, path, "item_id")
  i_title = _pick(header, path, "movie_title", "movie_name", "title")
  i_year = header.index("release_year") if "release_year" in header else None
  i_genre = _pick(header, path, "class", "genre", "genres", "type")
  out = Movies([], [], [], [])
  for n, line in enumerate(_text(path).splitlines()[1:], start=2):
    if not line.strip():
      continue
    f = _fields(path, n, line, "\t", len(header))
    title, year = f[i_title].strip(), (f[i_year].strip() if i_year is not None else "")
    year = year if year.isdigit() else year_of(title)
    if year and not year_of(title):
      title = f"{title} ({year})"
    out.ids.append(f[i_id].strip())
    out.titles.append(title)
    out.years.append(year)
    # RecBole joins genres with spaces; "(no genres listed)" has spaces of its own.
    out.genres.append(_genres(f[i_genre].replace("(no genres listed)", "").split()))
  return out


def _movies_ml100k(path):
  names = list(ML100K_GENRES)
  genre_file = path.parent / "u.genre"
  if genre_file.is_file():
    rows = [l.split("|") for l in _text(genre_file, ("latin-1",)).splitlines() if l.strip()]
    names = [name for name, _ in sorted(((r[0], int(r[1])) for r in rows), key=lambda r: r[1])]
  out = Movies([], [], [], [])
  for n, line in enumerate(_text(path, ("latin-1",)).splitlines(), start=1):
    if not line.strip():
      continue
    f = _fields(path, n, line, "|", 5 + len(names))
    flags = f[5:5 + len(names)]
    title = f[1].strip()
    out.ids.append(f[0].strip())
    out.titles.append(title)
    date = f[2].strip()  # "01-Jan-1995"
    out.years.append(year_of(title) or (date[-4:] if date[-4:].isdigit() else ""))
    out.genres.append(_genres(g for g, flag in zip(names, flags) if flag.strip() == "1"))
  return out


def _movies_dat(path):
  out = Movies([], [], [], [])
  for n, line in enumerate(_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    movie_id, rest = _fields(path, n, line, "::", 3)[0], line.split("::", 1)[1]
    title, genres = rest.rsplit("::", 1)
    out.ids.append(movie_id.strip())
    out.titles.append(title.strip())
    out.years.append(year_of(title.strip()))
    out.genres.append(_genres(genres.strip().split("|")))
  return out


def _movies_csv(path):
  out = Movies([], [], [], [])
  reader = csv.reader(io.StringIO(_text(path)))
  header = next(reader, None)
  if header is None or [h.strip() for h in header[:3]] != ["movieId", "title", "genres"]:
    raise ValueError(f"{path}: header {header}, expected movieId,title,genres")
  for n, f in enumerate(reader, start=2):
    if len(f) < 3:
      raise ValueError(f"{path}, line {n}: {len(f)} fields, expected 3 ({f})")
    out.ids.append(f[0].strip())
    out.titles.append(f[1].strip())
    out.years.append(year_of(f[1].strip()))
    out.genres.append(_genres(f[2].strip().split("|")))
  return out


# --- ratings (column-wise) ----------------------------------------------------------------

def _read_table(source, path, names, *, delimiter, skip_rows=0):
  """user, item as strings and time as float64, by column position, never row by row."""
  read = pa_csv.ReadOptions(column_names=names, skip_rows=skip_rows, block_size=1 << 24)
  parse = pa_csv.ParseOptions(delimiter=delimiter)
  convert = pa_csv.ConvertOptions(
      column_types={"user": pa.string(), "item": pa.string(), "time": pa.float64()},
      include_columns=["user", "item", "time"])
  try:
    table = pa_csv.read_csv(source, read_options=read, parse_options=parse, convert_options=convert)
  except pa.ArrowInvalid as e:
    raise ValueError(f"{path}: {e}") from e
  if table.num_rows == 0:
    raise ValueError(f"{path}: no ratings")
  for name in ("user", "item", "time"):
    if table.column(name).null_count:
      raise ValueError(f"{path}: {table.column(name).null_count} ratings without a {name}")
  times = table.column("time").to_numpy()
  if not np.all(np.isfinite(times)):
    raise ValueError(f"{path}: non-finite timestamps")
  return Ratings(pc.utf8_trim_whitespace(table.column("user").combine_chunks()),
                 pc.utf8_trim_whitespace(table.column("item").combine_chunks()),
                 times.astype(np.int64))


def _ratings_recbole(path):
  header = _recbole_header(path)
  names = [{"user_id": "user", "item_id": "item", "timestamp": "time"}.get(h, f"_{i}")
           for i, h in enumerate(header)]
  missing = {"user", "item", "time"} - set(names)
  if missing:
    raise ValueError(f"{path}: header {header} lacks user_id, item_id or timestamp")
  return _read_table(str(path), path, names, delimiter="\t", skip_rows=1)


def _ratings_ml100k(path):
  return _read_table(str(path), path, ["user", "item", "rating", "time"], delimiter="\t")


def _ratings_dat(path):
  # `::` is not a single-character delimiter: swap it for a tab in memory (bytes, not rows).
  data = path.read_bytes().replace(b"::", b"\t")
  return _read_table(pa.BufferReader(data), path, ["user", "item", "rating", "time"], delimiter="\t")


def _ratings_csv(path):
  with open(path, encoding="utf-8") as f:
    header = [h.strip() for h in f.readline().split(",")]
  if header[:4] != ["userId", "movieId", "rating", "timestamp"]:
    raise ValueError(f"{path}: header {header}, expected userId,movieId,rating,timestamp")
  return _read_table(str(path), path, ["user", "item", "rating", "time"] + [f"_{i}" for i in range(4, len(header))],
                     delimiter=",", skip_rows=1)


_READ_MOVIES = {"recbole": _movies_recbole, "ml-100k": _movies_ml100k, "dat": _movies_dat,
                "csv": _movies_csv}
_READ_RATINGS = {"recbole": _ratings_recbole, "ml-100k": _ratings_ml100k, "dat": _ratings_dat,
                 "csv": _ratings_csv}
