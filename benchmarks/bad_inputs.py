"""Bad inputs as a new user gives them: each case run as a command, its answer classified.

  python benchmarks/bad_inputs.py [--only SUBSTRING] [--json OUT]

Every case is a command line (the main job, a data or scoring tool, the LLM chat) with one bad
setting, flag, file or workdir state, and the culprit its message must name. A case is
  clear      refused (exit status not 0), no traceback, the culprit named;
  traceback  refused, but behind a traceback or without naming the culprit;
  wrong      accepted (exit status 0) or stopped by something else.
The table and the counts are what docs/reliability.md quotes. Cases that need finished stages
build them once (the smoke config's data and Stage 1, ~30 s). About 4 minutes on 2 cores.
"""

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
SMOKE = ("-m", "uqa_jax.main", "--config", "configs/smoke.py")


def _main(workdir, *overrides, stages="('data',)"):
  return (*SMOKE, "--workdir", workdir, f"--config.stages={stages}", *overrides)


def cases(tmp: str, base: str) -> list[tuple[str, tuple, str]]:
  """(name, python arguments, the culprit the message must name)."""
  w = lambda name: os.path.join(tmp, name)
  fresh = iter(range(1000))
  a = lambda: w(f"fresh{next(fresh)}")  # a new workdir per case: an accepted case leaves nothing for the next
  out = [
      # settings of the main job
      ("negative steps", _main(a(), "--config.pretrain.steps=-5"), "pretrain.steps"),
      ("negative batch size", _main(a(), "--config.pretrain.batch_size=-8"), "pretrain.batch_size"),
      ("zero align batch", _main(a(), "--config.align.batch_size=0"), "align.batch_size"),
      ("mistyped key", _main(a(), "--config.pretrain.lr=1"), "lr"),
      ("mistyped block", _main(a(), "--config.prtrain.steps=1"), "prtrain"),
      ("config without a data block", ("-m", "uqa_jax.main", "--config", w("no_data.py"), "--workdir", a()), "'data'"),
      ("config file missing", ("-m", "uqa_jax.main", "--config", w("absent.py"), "--workdir", a()), "absent.py"),
      ("data.max_len 1", _main(a(), "--config.data.max_len=1"), "data.max_len"),
      ("max_new_tokens 0", _main(a(), "--config.evaluate.max_new_tokens=0"), "max_new_tokens"),
      ("top_p 2", _main(a(), "--config.evaluate.top_p=2.0"), "top_p"),
      ("p_noise 1.5", _main(a(), "--config.data.synthetic.p_noise=1.5"), "p_noise"),
      ("min_len > max_len", _main(a(), "--config.data.synthetic.min_len=50", "--config.data.synthetic.max_len=10"),
       "min_len"),
      ("dropout 1", _main(a(), "--config.encoder.dropout=1.0"), "dropout"),
      ("unknown encoder", _main(a(), "--config.encoder.name=bert4rec"), "encoder.name"),
      ("unknown align mode", _main(a(), "--config.align.mode=half"), "mode"),
      ("width above max_text_len", _main(a(), "--config.input.widths=((500,16),)"), "widths"),
      ("filters min > max", _main(a(), "--config.data.filters.min_user_len=5000"), "min_user_len"),
      ("stages out of order", _main(a(), stages="('pretrain','data')"), "stages"),
      ("unknown keep_checkpoints", _main(a(), "--config.align.keep_checkpoints=some"), "keep_checkpoints"),
      ("one candidate", _main(a(), "--config.evaluate.candidates=1"), "candidates"),
      ("negative warm-up", _main(a(), "--config.pretrain.warmup_steps=-1"), "warmup_steps"),
      ("zero learning rate", _main(a(), "--config.align.learning_rate=0.0"), "learning_rate"),
      ("infinite learning rate", _main(a(), "--config.pretrain.learning_rate=inf"), "learning_rate"),
      ("mesh axis 0", _main(a(), "--config.mesh.data=0"), "mesh"),
      ("mesh axis 2.5", _main(a(), "--config.mesh.fsdp=2.5"), "mesh.fsdp"),
      ("heads not dividing the width", _main(a(), "--config.encoder.num_heads=3"), "num_heads"),
      ("a step count that is not a number", _main(a(), "--config.pretrain.steps=abc"), "pretrain.steps"),
      # workdir states
      ("changed setting in a finished workdir", _main(w("stale"), "--config.data.max_len=32"), "data.max_len: 64 -> 32"),
      ("truncated fingerprint.json", _main(w("fp")), "fingerprint.json"),
      ("truncated pretrain/result.json", _main(w("res"), stages="('data','pretrain')"), "result.json"),
      ("pretrain export tensor cut", (*SMOKE, "--workdir", w("cut"), "--config.stages=('diagnose',)"),
       "export"),
      ("workdir held by another run", _main(w("held")), "in use"),
      ("upstream not done", _main(w("empty"), stages="('data','evaluate')"), "pretrain stage"),
      # data tools
      ("generator 0 users", ("-m", "data_prep.synthetic", w("syn"), "--num-users", "0"), "num-users"),
      ("generator -5 users", ("-m", "data_prep.synthetic", w("syn"), "--num-users", "-5"), "num-users"),
      ("generator p-noise 1.5", ("-m", "data_prep.synthetic", w("syn"), "--p-noise", "1.5"), "p-noise"),
      ("generator min-len > max-len", ("-m", "data_prep.synthetic", w("syn"), "--min-len", "50", "--max-len", "10"),
       "min-len"),
      ("checker: eval file cut to 20 rows", ("-m", "data_prep.check", w("short")), "align_data_eval.arrow"),
      ("checker: no directory", ("-m", "data_prep.check", w("none")), "none"),
      ("checker: bad flag", ("-m", "data_prep.check", base, "--max-per-kind", "0"), "max-per-kind"),
      ("official import: files missing", ("-m", "data_prep.uqabench", w("none")), "pretrain_data_train.arrow"),
      ("movielens: source missing", ("-m", "data_prep.movielens", w("ml"), "--source", w("none")), "none"),
      # scoring and the LLM
      ("score --samples 0", ("-m", "uqa_jax.tools.score", w("p.jsonl"), "--samples", "0"), "samples"),
      ("score: file missing", ("-m", "uqa_jax.tools.score", w("absent.jsonl")), "absent.jsonl"),
      ("score: a line not JSON", ("-m", "uqa_jax.tools.score", w("bad.jsonl")), "line 2"),
      ("score: unknown variant", ("-m", "uqa_jax.tools.score", w("bad.jsonl"), "--variant", "loose"), "variant"),
      ("seeds: workdirs without reports", ("-m", "uqa_jax.tools.seeds", w("x"), w("y")), "report"),
      ("chat --max-new-tokens -1", ("-m", "uqa_jax.llm.chat", "hi", "--max-new-tokens", "-1"), "max-new-tokens"),
      ("chat: truncated GGUF", ("-m", "uqa_jax.llm.chat", "hi", "--model", w("cut.gguf")), "cut.gguf"),
      ("chat: model path missing", ("-m", "uqa_jax.llm.chat", "hi", "--model", w("nomodel")), "nomodel"),
  ]
  return out


def _prepare(tmp: str) -> str:
  """The files and workdirs the cases need; -> a finished data directory."""
  base = os.path.join(tmp, "base")
  subprocess.run([PY, *_main(base, stages="('data','pretrain')")], cwd=ROOT, check=True, capture_output=True)
  for name in ("stale", "fp", "res", "held", "cut"):
    shutil.copytree(base, os.path.join(tmp, name), ignore=shutil.ignore_patterns("run.lock"))
  with open(os.path.join(tmp, "fp", "data", "fingerprint.json"), "r+", encoding="utf-8") as f:
    f.truncate(10)
  with open(os.path.join(tmp, "res", "pretrain", "result.json"), "r+", encoding="utf-8") as f:
    f.truncate(10)
  params = os.path.join(tmp, "cut", "pretrain", "export", "params")
  for d, _, files in os.walk(params):
    for f in files:
      if f != "_METADATA" and os.path.getsize(os.path.join(d, f)) > 100:
        with open(os.path.join(d, f), "r+b") as fh:
          fh.truncate(os.path.getsize(os.path.join(d, f)) // 2)
  shutil.copytree(os.path.join(base, "data"), os.path.join(tmp, "short"))
  from uqa_jax.data import arrow_io  # pylint: disable=import-outside-toplevel
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  eval_path = os.path.join(tmp, "short", "align_data_eval.arrow")
  table = arrow_io.open_arrow(eval_path).read_all()
  with pa.OSFile(eval_path + ".new", "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table.slice(0, 20))
  os.replace(eval_path + ".new", eval_path)
  with open(os.path.join(tmp, "no_data.py"), "w", encoding="utf-8") as f:
    f.write("from configs import smoke\n\n\ndef get_config():\n  c = smoke.get_config()\n  del c['data']\n  return c\n")
  with open(os.path.join(tmp, "bad.jsonl"), "w", encoding="utf-8") as f:
    f.write('{"question": "q", "prediction": "a", "answer": "a", "task": "DF"}\nnot json\n')
  from uqa_jax.llm import assets  # pylint: disable=import-outside-toplevel
  with open(assets.smollm2_gguf_path(), "rb") as src, open(os.path.join(tmp, "cut.gguf"), "wb") as dst:
    dst.write(src.read(50_000_000))
  return os.path.join(base, "data")


def classify(rc: int, text: str, culprit: str) -> str:
  if rc == 0:
    return "wrong"
  if "Traceback" in text or culprit.lower() not in text.lower():
    return "traceback"
  return "clear"


def main() -> int:
  parser = argparse.ArgumentParser(prog="python benchmarks/bad_inputs.py", description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="run the cases whose name holds this")
  parser.add_argument("--json", help="also write the cases and their classes here")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="uqa-bad-inputs-")
  start = time.time()
  base = _prepare(tmp)
  lock = open(os.path.join(tmp, "held", "run.lock"), "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the workdir (as lock.py takes it)
  rows = []
  for name, argv, culprit in cases(tmp, base):
    if args.only not in name:
      continue
    out = subprocess.run([PY, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    kind = classify(out.returncode, text, culprit)
    last = next((line for line in reversed(out.stderr.strip().splitlines()) if line.strip()), "")
    rows.append({"case": name, "class": kind, "status": out.returncode, "lines": len(out.stderr.splitlines()),
                 "message": last[:160]})
    print(f"{kind:9} rc={out.returncode:<3} {name:40} {last[:110]}", flush=True)
  counts = {k: sum(r["class"] == k for r in rows) for k in ("clear", "traceback", "wrong")}
  print(f"\n{len(rows)} cases: clear {counts['clear']}, behind a traceback or unnamed {counts['traceback']}, "
        f"wrong {counts['wrong']} ({time.time() - start:.0f} s)")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"counts": counts, "cases": rows}, f, indent=1)
  shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
