"""The official UQABench files (Kaggle download): derive our `dataset_info.json` for them.

The official files carry neither dataset_info.json nor a `task` column: vocabulary sizes are
the official ones (`schema.OFFICIAL_VOCAB_SIZES`), the language is Chinese, the text columns
were tokenised with Qwen2.5's tokenizer, and tasks come from the official substring rule.
"""

import json
import os

import numpy as np

from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import schema


def derive_info(directory: str) -> dict:
  """dataset_info for the official files in `directory` (row counts read from the file footers)."""
  counts = {}
  for name in schema.ALL_FILES:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise arrow_io.DataFileError(f"{path}: missing; the official download has {list(schema.ALL_FILES)}")
    reader = arrow_io.open_arrow(path)
    problems = arrow_io.check_schema(path, reader.schema)
    if problems:
      raise arrow_io.DataFileError("\n".join(problems))
    counts[name] = sum(reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches))
  return {
      "name": "uqabench-official", "source": "official", "language": "zh",
      "tokenizer": "Qwen2.5 (official files; bpe table 151,936)",
      "vocab_sizes": dict(schema.OFFICIAL_VOCAB_SIZES), "max_len": schema.MAX_LEN,
      "counts": counts,
  }


def prepare(src_dir: str, out_dir: str | None = None, log=print) -> dict:
  """Writes dataset_info.json for `src_dir`; with `out_dir`, links the files there instead."""
  info = derive_info(src_dir)
  target = out_dir or src_dir
  os.makedirs(target, exist_ok=True)
  if out_dir and os.path.abspath(out_dir) != os.path.abspath(src_dir):
    for name in schema.ALL_FILES:
      link = os.path.join(out_dir, name)
      if os.path.lexists(link):
        os.remove(link)
      os.symlink(os.path.abspath(os.path.join(src_dir, name)), link)
  arrow_io.write_dataset_info(target, info)
  log(f"official: {src_dir}: " + ", ".join(f"{f} {n:,} rows" for f, n in info["counts"].items()))
  return info


def rows_longer_than(directory: str, max_len: int, kind: str = "align") -> dict[str, tuple[int, int]]:
  """Per `kind` file: (rows with more than `max_len` clicks, all rows), read from the offsets."""
  out = {}
  for split in schema.SPLITS:
    name = schema.file_name(kind, split)
    longer = total = 0
    for offsets, _ in arrow_io.item_sequences(os.path.join(directory, name)):
      lengths = np.diff(offsets)
      longer += int((lengths > max_len).sum())
      total += lengths.size
    out[name] = (longer, total)
  return out


def answer_report(directory: str, split: str = "eval") -> dict[str, dict]:
  """Answer histogram and floors per sub-task of an align file, tasks by the official rule."""
  path = os.path.join(directory, schema.file_name("align", split))
  items = []
  for start, batch in arrow_io.SequenceFile(path).record_batches():
    for r, text in enumerate(batch.column(schema.TEXT_COLUMN).to_pylist()):
      question, answer = (m["content"] for m in json.loads(text)[-2:])
      try:
        task = schema.task_of(None, question, "zh")
      except ValueError as e:
        raise arrow_io.DataFileError(f"{path}, row {start + r}: {e}") from None
      answers_lib.check_gold(answer, f"{path}, row {start + r}")
      items.append((task, answer, ()))
  return answers_lib.answer_report(items)
