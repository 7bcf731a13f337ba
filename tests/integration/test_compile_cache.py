"""The persistent compilation cache as `main` configures it: a second process that compiles the
same function reads it from the cache, and the collector counts that hit (the line a rerun logs)."""

import json
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
