"""The persistent compilation cache as `main` configures it: a second process that compiles the
same function reads it from the cache, and the collector counts that hit (the line a rerun logs)."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
from uqa_jax.runtime import compile_stats
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
with compile_stats.Collector() as c:
  f(np.ones((64, 64), np.float32)).block_until_ready()
print(json.dumps(c.summary()))
"""


def test_a_second_process_reads_the_executable_from_the_persistent_cache(tmp_path):
  runs = []
  for _ in range(2):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cache")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
  first, second = runs
  assert first["executables"] >= 1 and first["cache_hits"] == 0, first
  assert second["cache_hits"] >= 1 and second["executables"] == first["executables"], second


def _pretrain(workdir, cache_dir, *flags):
  """configs/smoke.py's Stage 1 (2 steps) through `main` -> its result's compile figures."""
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  out = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", str(workdir),
                        "--config.pretrain.steps=2", "--config.pretrain.warmup_steps=1", *flags],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(os.path.join(workdir, "pretrain", "result.json"), encoding="utf-8") as f:
    return json.load(f)["compile"]


def test_main_reads_a_second_run_from_the_cache_and_off_turns_it_off(tmp_path):
  """Through `main`: $JAX_COMPILATION_CACHE_DIR is the default cache, so a second workdir's Stage 1
  reads its executables back; `--compilation_cache off` compiles them all again, although JAX
  would read that variable by itself."""
  cache = tmp_path / "cache"
  first = _pretrain(tmp_path / "a", cache)
  second = _pretrain(tmp_path / "b", cache)
  off = _pretrain(tmp_path / "c", cache, "--compilation_cache", "off")
  assert first["cache_hits"] == 0 and second["cache_hits"] == second["executables"] == first["executables"], second
  assert off["cache_hits"] == 0 and off["executables"] == first["executables"], off
