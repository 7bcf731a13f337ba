"""Where a run's files live: each stage writes only `<workdir>/<stage>/`.

  <workdir>/<stage>/fingerprint.json  the settings the stage's outputs depend on
  <workdir>/<stage>/result.json       what the stage returned, written when it finished
  <workdir>/data/                     the data set (Arrow files and dataset_info.json)
The runner (`uqa_jax/stages/__init__.py`) checks fingerprints; every layer that reads a
workdir's files takes their names from here.
"""

import json
import os

RESULT = "result.json"
FINGERPRINT = "fingerprint.json"
EVAL_COST = "cost.json"  # in <workdir>/evaluate/: Table 7's prefill timings


def data_dir(workdir: str) -> str:
  return os.path.join(workdir, "data")


def fingerprint_diff(old: dict, new: dict) -> list[tuple[str, str, str]]:
  """Every key whose value differs between two fingerprints, sorted, as (key, old, new) with each
  value as JSON ('absent' where a fingerprint lacks the key)."""
  show = lambda d, k: json.dumps(d[k]) if k in d else "absent"
  return [(k, show(old, k), show(new, k)) for k in sorted(set(old) | set(new))
          if (k in old, old.get(k)) != (k in new, new.get(k))]
