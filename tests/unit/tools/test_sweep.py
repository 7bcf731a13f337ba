"""`python -m uqa_jax.tools.sweep`: runs configs in their own workdirs (resumable) and tabulates and plots
what each measured against encoder size or sequence length."""

import json
import os

import pytest

from uqa_jax.tools import sweep


def _fake_run(root, name, encoder, total, max_len, recall, aligned=None):
  workdir = os.path.join(root, name)
  os.makedirs(os.path.join(workdir, "pretrain"))
  with open(os.path.join(workdir, "pretrain", "result.json"), "w", encoding="utf-8") as f:
    json.dump({"model": {"recall@10": recall, "ndcg@10": recall / 2}, "popularity": {"recall@10": 0.1},
               "parameters": total, "encoder_parameters": encoder}, f)
  with open(os.path.join(workdir, "pretrain", "fingerprint.json"), "w", encoding="utf-8") as f:
    json.dump({"data.max_len": max_len}, f)
  if aligned is not None:
    os.makedirs(os.path.join(workdir, "evaluate"))
    with open(os.path.join(workdir, "evaluate", "result.json"), "w", encoding="utf-8") as f:
      json.dump({"runs": {"aligned": {"official": {"accuracy": aligned, "ci": [aligned - 0.02, aligned + 0.03]}},
                          "shuffled_user": {"official": {"accuracy": 0.1, "ci": [0.08, 0.12]}}}}, f)
  return workdir


def test_table_rows_follow_x_and_show_stage3_with_intervals(tmp_path):
  big = _fake_run(tmp_path, "scale-13m", 12_603_904, 200_000_000, 512, 0.30, aligned=0.25)
  small = _fake_run(tmp_path, "scale-3m", 3_164_416, 190_000_000, 512, 0.20, aligned=0.15)
  rows = sweep.collect(["configs/scale.py:13m", "configs/scale.py:3m"], [big, small])
  text = sweep.table(rows, "encoder_parameters")
  lines = text.splitlines()
  assert lines[2].startswith("| 3,164,416 | configs/scale.py:3m | 190,000,000 | 0.2000 | 0.1000 | 0.1000 | "
                             "15.0 [13.0, 18.0] | 10.0 [8.0, 12.0] |"), lines[2]
  assert lines[3].startswith("| 12,603,904 | configs/scale.py:13m |"), lines[3]
  sweep.write(rows, "encoder_parameters", str(tmp_path / "out"))
  assert os.path.getsize(tmp_path / "out" / "sweep.png") > 1000
  only_stage1 = sweep.table(sweep.collect(["a"], [_fake_run(tmp_path, "s1", 1, 2, 32, 0.1)]), "max_len")
  assert "aligned official" not in only_stage1 and only_stage1.splitlines()[2].startswith("| 32 | a | 2 |")


def test_a_missing_or_old_result_names_the_config(tmp_path):
  with pytest.raises(sweep.SweepError, match="configs/seqlen.py:64: .*pretrain/result.json is missing"):
    sweep.collect(["configs/seqlen.py:64"], [str(tmp_path / "nothing")])
  old = _fake_run(tmp_path, "old", 1, 2, 32, 0.1)
  path = os.path.join(old, "pretrain", "result.json")
  with open(path, encoding="utf-8") as f:
    result = json.load(f)
  del result["encoder_parameters"]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f)
  with pytest.raises(sweep.SweepError, match="no parameter count .*--config.restart=pretrain"):
    sweep.collect(["configs/scale.py:3m"], [old])


TINY = ["--config.data.synthetic.num_users=60", "--config.data.synthetic.num_items=300", "--config.data.max_len=32",
        "--config.pretrain.steps=2", "--config.pretrain.batch_size=8", "--config.pretrain.warmup_steps=1"]
