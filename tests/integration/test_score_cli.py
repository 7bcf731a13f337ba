"""python -m uqa_jax.tools.score as a user runs it, on official-format JSONL."""

import json
import subprocess
import sys


from tests.unit.evaluation.test_scoring import OFFICIAL_LINES


def test_score_command_reads_official_jsonl(tmp_path):
  path = tmp_path / "pred.jsonl"
  path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in OFFICIAL_LINES) + "\n", encoding="utf-8")
  out = subprocess.run([sys.executable, "-m", "uqa_jax.tools.score", str(path), "--json"], capture_output=True,
                       text=True, check=True).stdout
  score = json.loads(out)["score"]
  assert score["units"] == "records" and score["cells"]["overall"]["correct"] == 4
  strict = subprocess.run([sys.executable, "-m", "uqa_jax.tools.score", str(path), "--variant", "strict"],
                          capture_output=True, text=True, check=True).stdout
  assert "overall" in strict and "4/9" in strict.replace(" ", "")
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"question": "q"}\nnot json\n', encoding="utf-8")
  run = subprocess.run([sys.executable, "-m", "uqa_jax.tools.score", str(bad)], capture_output=True, text=True)
  assert run.returncode == 2 and "line 2: not JSON" in run.stderr
