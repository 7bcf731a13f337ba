"""The TFDS builder writes and reads an official-format directory without importing TensorFlow."""

import subprocess
import sys

from tests.conftest import ROOT


SCRIPT = r"""
import sys
import numpy as np
import tensorflow_datasets as tfds
from uqa_jax.data import arrow_io, schema, tfds_builder
src, out = sys.argv[1], sys.argv[2]
builder = tfds_builder.UqaBench(source_dir=src, data_dir=out)
builder.download_and_prepare()
sources = tfds.data_source("uqa_bench", data_dir=out)
for split, name in tfds_builder.SPLITS.items():
  f = arrow_io.SequenceFile(f"{src}/{name}")
  assert len(sources[split]) == len(f), split
  rows = set()
  for i in range(len(f)):
    example = sources[split][i]
    r = int(example["row"])
    rows.add(r)
    got, want = tfds_builder.example_to_row(example), f.row(r)
    assert got.keys() == want.keys(), (split, r)
    for c in schema.FEATURE_COLUMNS:
      assert got[c].to_lists() == want[c].to_lists(), (split, r, c)
    for k in (schema.TEXT_COLUMN, schema.TASK_COLUMN):
      assert got.get(k) == want.get(k), (split, r, k)
    assert f.has_time and np.array_equal(got[schema.TIME_COLUMN], want[schema.TIME_COLUMN]), (split, r)
  assert rows == set(range(len(f))), split
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("ok")
"""


def test_build_and_read_without_tensorflow(en_dir, tmp_path):
  out = subprocess.run([sys.executable, "-c", SCRIPT, en_dir, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
