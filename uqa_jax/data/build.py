"""From a catalog and users' click histories to an official-format data set directory.

Shared by every source we build ourselves (synthetic, MovieLens): the paper's filters,
truncation to the most recent items, the pretrain/align splits, QA generation and the
four Arrow files plus `dataset_info.json`.

Splits. Each user's sequence S (the most recent `max_len` clicks) gives:
  pretrain train: S[:-1]   (the last click is never trained on)
  pretrain eval:  S        (the next-item target is the last position)
  align train/eval: history S[:-1] with QA about it and about the next item S[-1];
                    users are split between train and eval by `align_eval_fraction`.
"""

import collections
import dataclasses
import os

import numpy as np

from uqa_jax.data import arrow_io
from uqa_jax.data import schema
from uqa_jax.data.catalog import Catalog, RowEncoder
from uqa_jax.data.qa import QAGenerator


@dataclasses.dataclass(frozen=True)
class Filters:
  min_item_count: int = 3  # paper: drop items with fewer interactions
  min_user_len: int = 10  # drop users with shorter histories ...
  max_user_len: int = 2000  # ... or longer ones (bots, crawlers)


def filter_interactions(histories: list[np.ndarray], filters: Filters):
  """Repeats the item and user filters until neither removes anything.

  Returns (kept histories with items renumbered 1..N, kept old item ids, stats dict).
  """
  stats = collections.Counter(users_in=len(histories), clicks_in=int(sum(map(len, histories))))
  while True:
    counts = np.bincount(np.concatenate(histories)) if histories else np.zeros(1, int)
    rare = counts < filters.min_item_count
    kept = [h[~rare[h]] for h in histories]
    dropped_clicks = int(sum(map(len, histories)) - sum(map(len, kept)))
    short = sum(len(h) < filters.min_user_len for h in kept)
    long = sum(len(h) > filters.max_user_len for h in kept)
    stats["clicks_dropped_rare_items"] += dropped_clicks
    stats["users_dropped_short"] += short
    stats["users_dropped_long"] += long
    histories = [h for h in kept if filters.min_user_len <= len(h) <= filters.max_user_len]
    if not (dropped_clicks or short or long):
      break
  items = np.unique(np.concatenate(histories)) if histories else np.zeros(0, int)
  remap = np.zeros((items.max() + 1) if items.size else 1, dtype=np.int64)
  remap[items] = np.arange(1, items.size + 1)
  stats.update(users_out=len(histories), items_out=int(items.size),
               clicks_out=int(sum(map(len, histories))))
  return [remap[h] for h in histories], items, dict(stats)


def write_dataset(out_dir: str, *, name: str, source: str, catalog: Catalog, histories,
                  tokenizer, tokenizer_name: str, qa_attrs: tuple[str, ...], seed: int,
                  max_len: int = schema.MAX_LEN, align_eval_fraction: float = 0.1,
                  extra_info: dict | None = None, log=print) -> dict:
  """Writes the four official files and dataset_info.json; returns the info dict."""
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  seqs = [np.asarray(h[-max_len:], dtype=np.int64) for h in histories]
  rows = RowEncoder(catalog, tokenizer)
  counts = {}
  counts[schema.file_name("pretrain", "train")] = arrow_io.write_sequences(
      os.path.join(out_dir, schema.file_name("pretrain", "train")), rows.columns([s[:-1] for s in seqs]))
  counts[schema.file_name("pretrain", "eval")] = arrow_io.write_sequences(
      os.path.join(out_dir, schema.file_name("pretrain", "eval")), rows.columns(seqs))

  is_eval = rng.random(len(seqs)) < align_eval_fraction
  generator = QAGenerator(catalog, qa_attrs)
  per_task = collections.Counter()
  for split, want_eval in (("train", False), ("eval", True)):
    hist, texts, tasks = [], [], []
    for s, e in zip(seqs, is_eval):
      if e != want_eval:
        continue
      for qa in generator.generate(s[:-1], int(s[-1]), rng):
        hist.append(s[:-1])
        texts.append(qa.chat_json())
        tasks.append(qa.task)
        per_task[f"{split}/{qa.task}"] += 1
    columns = rows.columns(hist)
    columns[schema.TEXT_COLUMN] = texts
    columns[schema.TASK_COLUMN] = tasks
    fname = schema.file_name("align", split)
    counts[fname] = arrow_io.write_sequences(os.path.join(out_dir, fname), columns)

  info = {
      "name": name, "source": source, "language": catalog.language,
      "tokenizer": tokenizer_name, "vocab_sizes": catalog.vocab_sizes(len(tokenizer)),
      "max_len": max_len, "counts": counts, "num_users": len(seqs),
      "num_items": catalog.num_items, "qa_per_task": dict(sorted(per_task.items())),
      "seed": seed, **(extra_info or {}),
  }
  arrow_io.write_dataset_info(out_dir, info)
  log(f"wrote {out_dir}: " + ", ".join(f"{f} {n:,} rows" for f, n in counts.items()))
  return info
