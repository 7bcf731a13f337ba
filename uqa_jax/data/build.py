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
from typing import ClassVar

import numpy as np

import pyarrow as pa

from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import schema
from uqa_jax.data.catalog import Catalog, RowEncoder, list_array
from uqa_jax.data.qa import QAGenerator


WRITE_ROWS = 4096  # rows per record batch: files are built and written chunk by chunk


@dataclasses.dataclass(frozen=True)
class Filters:
  LIMITS: ClassVar[dict] = {"min_item_count": ">= 1", "min_user_len": ">= 1", "max_user_len": ">= 1"}
  min_item_count: int = 3  # paper: drop items with fewer interactions
  min_user_len: int = 10  # drop users with shorter histories ...
  max_user_len: int = 2000  # ... or longer ones (bots, crawlers)

  def __post_init__(self):
    if self.min_user_len > self.max_user_len:
      raise ValueError(f"min_user_len={self.min_user_len} > max_user_len={self.max_user_len}: no user could be kept")


def filter_interactions(histories: list[np.ndarray], filters: Filters, times=None):
  """Repeats the item and user filters until neither removes anything.

  `times` (optional): one array of click times per history, filtered alongside it.
  Returns (kept histories with items renumbered 1..N, their times or None, kept old item ids,
  stats dict).
  """
  if times is not None and [len(t) for t in times] != [len(h) for h in histories]:
    raise ValueError("filter_interactions: `times` must hold one time per click of every history")
  times = list(times) if times is not None else [None] * len(histories)
  stats = collections.Counter(users_in=len(histories), clicks_in=int(sum(map(len, histories))))
  while True:
    counts = np.bincount(np.concatenate(histories)) if histories else np.zeros(1, int)
    rare = counts < filters.min_item_count
    keep = [~rare[h] for h in histories]
    kept = [h[k] for h, k in zip(histories, keep)]
    times = [t if t is None else t[k] for t, k in zip(times, keep)]
    dropped_clicks = int(sum(map(len, histories)) - sum(map(len, kept)))
    short = sum(len(h) < filters.min_user_len for h in kept)
    long = sum(len(h) > filters.max_user_len for h in kept)
    stats["clicks_dropped_rare_items"] += dropped_clicks
    stats["users_dropped_short"] += short
    stats["users_dropped_long"] += long
    in_range = [filters.min_user_len <= len(h) <= filters.max_user_len for h in kept]
    histories = [h for h, ok in zip(kept, in_range) if ok]
    times = [t for t, ok in zip(times, in_range) if ok]
    if not (dropped_clicks or short or long):
      break
  items = np.unique(np.concatenate(histories)) if histories else np.zeros(0, int)
  remap = np.zeros((items.max() + 1) if items.size else 1, dtype=np.int64)
  remap[items] = np.arange(1, items.size + 1)
  stats.update(users_out=len(histories), items_out=int(items.size),
               clicks_out=int(sum(map(len, histories))))
  has_times = any(t is not None for t in times)
  return [remap[h] for h in histories], times if has_times else None, items, dict(stats)


def write_dataset(out_dir: str, *, name: str, source: str, catalog: Catalog, histories,
                  tokenizer, times=None, tokenizer_name: str, qa_attrs: tuple[str, ...], seed: int,
                  interest_attrs: tuple[str, ...] | None = None,
                  max_len: int = schema.MAX_LEN, align_eval_fraction: float = 0.1, train_questions: int = 1,
                  extra_info: dict | None = None, log=print) -> dict:
  """Writes the four official files and dataset_info.json; returns the info dict.

  Only each user's most recent `max_len` clicks are written, and every QA answer is computed
  from exactly the align history written (so from what an encoder reading `max_len` steps sees).
  With `times` (one array of click times per history, seconds), every file also carries
  `schema.TIME_COLUMN`, sliced exactly like the items, and a user whose held-out click shares
  its second with the click before gets no IP/AP question (which of the two is "next" is then
  arbitrary); those users are counted in `dataset_info.json` (`ip_ap_skipped_tied_next`).
  `train_questions` rounds of QA per align-train user (more alignment data: each round asks every
  sub-task again with its own draws; a question the user was already asked is dropped and
  counted); align-eval users get one round, drawn as with one train round, so their questions are
  the same whatever `train_questions` is.
  """
  if max_len < 3:
    raise ValueError(f"max_len {max_len}: need at least 3 clicks (a history of 2 plus the next item)")
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  seqs = [np.asarray(h[-max_len:], dtype=np.int64) for h in histories]
  clocks = None if times is None else [np.asarray(t[-max_len:], dtype=np.int64) for t in times]
  truncated = sum(len(h) > max_len for h in histories)
  rows = RowEncoder(catalog, tokenizer)

  def columns(users, cut):
    """Feature columns of `users`' sequences, the last `cut` steps dropped."""
    out = rows.columns([seqs[u][:len(seqs[u]) - cut] for u in users])
    if clocks is not None:
      kept = [clocks[u][:len(clocks[u]) - cut] for u in users]
      offsets = np.concatenate([[0], np.cumsum([len(t) for t in kept])])
      out[schema.TIME_COLUMN] = list_array(
          offsets, pa.array(np.concatenate(kept) if kept else np.zeros(0, np.int64), pa.int64()))
    return out

  def write(kind, split, users, cut, extra=None):
    """Writes one file, WRITE_ROWS rows at a time (memory bounded by the chunk, not the file)."""
    def chunks():
      for start in range(0, max(len(users), 1), WRITE_ROWS):
        out = columns(users[start:start + WRITE_ROWS], cut)
        for name, values in (extra or {}).items():
          out[name] = values[start:start + WRITE_ROWS]
        yield out
    name = schema.file_name(kind, split)
    counts[name] = arrow_io.write_sequence_batches(os.path.join(out_dir, name), chunks())

  everyone = list(range(len(seqs)))
  counts = {}
  write("pretrain", "train", everyone, 1)
  write("pretrain", "eval", everyone, 0)

  is_eval = rng.random(len(seqs)) < align_eval_fraction
  # The held-out click is well defined unless it shares its second with the click before.
  next_known = ([True] * len(seqs) if clocks is None
                else [len(c) < 2 or c[-1] != c[-2] for c in clocks])
  generator = QAGenerator(catalog, qa_attrs, interest_attrs)
  more_rng = np.random.default_rng([seed, 2])  # train rounds after the first: the main stream stays as it was
  repeated = 0
  per_task = collections.Counter()
  answers = {}
  for split, want_eval in (("train", False), ("eval", True)):
    users, texts, tasks, golds = [], [], [], []
    for u, (s, e) in enumerate(zip(seqs, is_eval)):
      if e != want_eval:
        continue
      asked = set()
      for round_ in range(1 if want_eval else train_questions):
        for qa in generator.generate(s[:-1], int(s[-1]), rng if round_ == 0 else more_rng,
                                     next_is_known=next_known[u]):
          text = qa.chat_json()
          if text in asked:
            repeated += 1
            continue
          asked.add(text)
          users.append(u)
          texts.append(text)
          tasks.append(qa.task)
          golds.append((qa.task, qa.answer, qa.candidates))
          per_task[f"{split}/{qa.task}"] += 1
    write("align", split, users, 1, {schema.TEXT_COLUMN: texts, schema.TASK_COLUMN: tasks})
    answers[split] = answers_lib.answer_report(golds)

  info = {
      "name": name, "source": source, "language": catalog.language,
      "tokenizer": tokenizer_name, "vocab_sizes": catalog.vocab_sizes(len(tokenizer)),
      "max_len": max_len, "has_timestamps": clocks is not None, "counts": counts, "num_users": len(seqs),
      "num_items": catalog.num_items, "qa_per_task": dict(sorted(per_task.items())),
      "users_truncated_to_max_len": truncated,
      "ip_ap_skipped_tied_next": int(len(seqs) - sum(next_known)),
      **({"train_questions": train_questions, "train_questions_repeated_dropped": repeated}
         if train_questions > 1 else {}),
      "answers": answers, "seed": seed, **(extra_info or {}),
  }
  arrow_io.write_dataset_info(out_dir, info)
  log(f"wrote {out_dir}: " + ", ".join(f"{f} {n:,} rows" for f, n in counts.items()))
  log(f"kept the most recent {max_len} clicks: {truncated:,} of {len(seqs):,} users had more")
  if train_questions > 1:
    log(f"{train_questions} QA rounds per align-train user: {repeated:,} questions a user was already asked "
        "were dropped")
  if clocks is not None:
    log(f"held-out click tied in time with the one before (no IP/AP question): "
        f"{info['ip_ap_skipped_tied_next']:,} of {len(seqs):,} users")
  return info
