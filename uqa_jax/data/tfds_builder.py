"""A tensorflow-datasets builder over any official-format directory, built and read without TensorFlow.

TFDS's nested `Sequence(Sequence(int64))` feature cannot be written without TensorFlow (its
ragged serializer imports it; see README "Notes"), so each `list<list<int64>>` column is
stored flat, the way Arrow stores it: `ids` (all ids of the row) and `offsets` (bag t is
`ids[offsets[t]:offsets[t+1]]`). Files are array_record, so `tfds.data_source` gives random
access with no TensorFlow import. TFDS orders examples by its own key hash; `row` gives each
example's row in the Arrow file. Click times (`uni_seq_timestamp`) are stored when the file
has them and are empty otherwise (a real row has at least one step).

  builder = UqaBench(source_dir="workdir/default/data", data_dir="~/tensorflow_datasets")
  builder.download_and_prepare()
  source = tfds.data_source("uqa_bench", data_dir="~/tensorflow_datasets")["align_eval"]
  row = example_to_row(source[0])  # same dict of `Bags` as arrow_io.SequenceFile.row
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from uqa_jax.data import arrow_io
from uqa_jax.data import schema

SPLITS = {f"{k}_{s}": schema.file_name(k, s) for k in schema.KINDS for s in schema.SPLITS}


class UqaBench(tfds.core.GeneratorBasedBuilder):
  """UQABench-format data (official, synthetic or MovieLens) as a TFDS data set."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Flat ids/offsets per feature column; array_record.",
                   "1.1.0": "Optional click times (uni_seq_timestamp)."}

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self):
    column = lambda: tfds.features.FeaturesDict({
        "ids": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        "offsets": tfds.features.Tensor(shape=(None,), dtype=np.int32)})
    return tfds.core.DatasetInfo(
        builder=self,
        description="UQABench official schema; text columns already tokenised.",
        features=tfds.features.FeaturesDict({
            **{c: column() for c in schema.FEATURE_COLUMNS},
            schema.TEXT_COLUMN: tfds.features.Text(),
            schema.TASK_COLUMN: tfds.features.Text(),
            schema.TIME_COLUMN: tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "row": tfds.features.Scalar(dtype=np.int64),  # the row in the Arrow file
        }),
    )

  def _split_generators(self, dl_manager):
    if not self._source_dir:
      raise ValueError("UqaBench needs source_dir=<official-format directory> to build")
    return {split: self._generate_examples(os.path.join(self._source_dir, name))
            for split, name in SPLITS.items()}

  def _generate_examples(self, path):
    f = arrow_io.SequenceFile(path)
    for r in range(len(f)):
      row = f.row(r)
      example = {c: {"ids": row[c].ids, "offsets": row[c].offsets} for c in schema.FEATURE_COLUMNS}
      example[schema.TEXT_COLUMN] = row.get(schema.TEXT_COLUMN) or ""
      example[schema.TASK_COLUMN] = row.get(schema.TASK_COLUMN) or ""
      example[schema.TIME_COLUMN] = row.get(schema.TIME_COLUMN, np.zeros((0,), np.int64))
      example["row"] = r
      yield r, example


def example_to_row(example: dict) -> dict:
  """A TFDS example -> the row dict `arrow_io.SequenceFile.row` returns."""
  row = {c: arrow_io.Bags(np.asarray(example[c]["ids"]), np.asarray(example[c]["offsets"]))
         for c in schema.FEATURE_COLUMNS}
  for key in (schema.TEXT_COLUMN, schema.TASK_COLUMN):
    value = example[key]
    value = value.decode() if isinstance(value, bytes) else value
    if value:
      row[key] = value
  times = np.asarray(example[schema.TIME_COLUMN])
  if times.size:
    row[schema.TIME_COLUMN] = times
  return row
