"""The import contracts can fail: on a copy of the package, a lower layer importing a higher one
breaks the layers contract, and one stage importing another breaks the stages' independence."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.unit.test_layers import LINT


@pytest.mark.parametrize("module, line, edge", [
    ("data/schema.py", "from uqa_jax.stages import align", "uqa_jax.data.schema -> uqa_jax.stages.align"),
    ("stages/report.py", "from uqa_jax.stages import evaluate", "uqa_jax.stages.report -> uqa_jax.stages.evaluate"),
])
def test_an_import_against_the_layers_breaks_the_contracts(tmp_path, module, line, edge):
  shutil.copytree(os.path.join(ROOT, "uqa_jax"), tmp_path / "uqa_jax", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
  path = tmp_path / "uqa_jax" / module
  path.write_text(path.read_text() + f"\n{line}  # reaching where it must not\n")
  out = subprocess.run(LINT, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                       text=True, timeout=120, check=False)
  assert out.returncode != 0
  assert edge in out.stdout, out.stdout
