"""Each reliability protection removed in turn: the test that covers it must then fail.

  python benchmarks/protections.py [NAME_SUBSTRING ...]

Each mutation replaces one line of the library (a check made a no-op), runs the test that covers
it (150 s limit: a hang counts as a failure), and restores the file with `git checkout`; so the
files it touches must have no uncommitted changes (it refuses otherwise). About 4 minutes on 2
cores. docs/reliability.md quotes its table.
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

MUTATIONS = [
  ("limits unchecked", "uqa_jax/config/blocks.py",
   "  for name, rule in getattr(cls, \"LIMITS\", {}).items():\n    if name not in values:",
   "  for name, rule in {}.items():\n    if name not in values:",
   ["tests/unit/config/test_limits.py", "-k", "outside_its_limit"]),
  ("no free-space check", "uqa_jax/runtime/disk.py",
   "  free = free_bytes(path)\n  if free < nbytes + MARGIN:",
   "  free = free_bytes(path)\n  if False:",
   ["tests/integration/test_faults.py"]),
  ("partial checkpoint left", "uqa_jax/runtime/checkpoint.py",
   "    return disk.reported(path, \"checkpoint\", self.newest(), cleanup=self._remove_partial, nbytes=nbytes)",
   "    return disk.reported(path, \"checkpoint\", self.newest(), cleanup=None, nbytes=nbytes)",
   ["tests/integration/test_faults.py"]),
  ("no fallback to the previous checkpoint", "uqa_jax/runtime/checkpoint.py",
   "        return step, self.restore(step, abstract_state, data_iterator)\n      except Exception as e:",
   "        return step, self.restore(step, abstract_state, data_iterator)\n      except KeyboardInterrupt as e:",
   ["tests/integration/test_faults.py"]),
  ("no export manifest check", "uqa_jax/encoders/export.py",
   "  damaged = manifest.problems(params_dir, spec.get(\"files\", {}))",
   "  damaged = []",
   ["tests/unit/encoders/test_export.py", "tests/integration/test_faults.py"]),
  ("no stage version in fingerprints", "uqa_jax/stages/__init__.py",
   "    if version != 1:\n      out[f\"code_version.{stage}\"] = version",
   "    if False:\n      out[f\"code_version.{stage}\"] = version",
   ["tests/integration/test_stages.py", "-k", "bumped"]),
  ("a started stage reused as done", "uqa_jax/stages/__init__.py",
   "  return \"done\" if os.path.exists(os.path.join(out, RESULT)) else \"started\"",
   "  return \"done\"",
   ["tests/integration/test_kills.py", "-k", "data_stage"]),
  ("a run's predictions taken as its result", "uqa_jax/stages/evaluate.py",
   "  todo = [r for r in names if not os.path.exists(os.path.join(out_dir, r, workdir_lib.RESULT))]",
   "  todo = [r for r in names if not os.path.exists(os.path.join(out_dir, r, \"predictions.jsonl\"))]",
   ["-m", "slow or not slow", "tests/integration/test_kills.py", "-k", "evaluate"]),
  ("process 0's failure not told, no watchdog", "uqa_jax/runtime/distributed.py",
   "  if jax.process_count() > 1:\n    word = ",
   "  if False:\n    word = ",
   ["tests/integration/test_multiprocess.py", "-k", "process_0_failure"]),
  ("no watchdog", "uqa_jax/runtime/distributed.py",
   "  if jax.process_count() == 1:\n    return\n  me = jax.process_index()",
   "  if True:\n    return\n  me = jax.process_index()",
   ["tests/integration/test_multiprocess.py", "-k", "failing_inside"]),
  ("no workdir lock", "uqa_jax/runtime/lock.py",
   "      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    except BlockingIOError:",
   "      pass\n    except BlockingIOError:",
   ["tests/integration/test_workdir_lock.py"]),
  ("mistyped key: ml_collections' traceback", "uqa_jax/main.py",
   "  except (AttributeError, KeyError, TypeError, ValueError) as e:  # from the file's code, or an override",
   "  except ZeroDivisionError as e:  # from the file's code, or an override",
   ["tests/integration/test_main.py", "-k", "mistyped"]),
]

only = sys.argv[1:]
dirty = subprocess.run(["git", "status", "--porcelain", "--", *sorted({m[1] for m in MUTATIONS})], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
if dirty:
  sys.exit(f"benchmarks/protections.py: commit or stash these first (each is restored with git checkout):\n{dirty}")
for name, path, old, new, test in MUTATIONS:
  if only and not any(o in name for o in only):
    continue
  full = f"{ROOT}/{path}"
  text = open(full).read()
  assert text.count(old) == 1, (name, old)
  open(full, "w").write(text.replace(old, new))
  if "watchdog" in name and "told" in name:  # both: the watchdog off too
    t2 = open(full).read()
    t2 = t2.replace("  if jax.process_count() == 1:\n    return\n  me = jax.process_index()", "  if True:\n    return\n  me = jax.process_index()")
    open(full, "w").write(t2)
  start = time.time()
  try:
    out = subprocess.run([PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *test], cwd=ROOT,
                         capture_output=True, text=True, timeout=150)
    verdict = "FAILS (protection matters)" if out.returncode != 0 else "passes (protection NOT shown)"
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
  except subprocess.TimeoutExpired:
    verdict, last = "FAILS: hangs past 150 s (protection matters)", ""
  finally:
    subprocess.run(["git", "checkout", "--", path], cwd=ROOT, check=True)
  print(f"{name:45} {verdict:35} {time.time() - start:5.0f}s  {last[:90]}", flush=True)
