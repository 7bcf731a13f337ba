"""The package layers hold: the import contracts in pyproject.toml (import-linter) are kept, and
they are broken when a lower layer imports a higher one (checked on a copy of the package)."""

import os
import shutil
import subprocess
import sys
from tests.conftest import ROOT

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                              "sys.exit(lint_imports_command())", "--no-cache"]


def _lint(cwd: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": cwd}
  return subprocess.run(LINT, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_import_contracts_are_kept():
  out = _lint(ROOT)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "0 broken" in out.stdout and "BROKEN" not in out.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contracts(tmp_path):
  shutil.copytree(os.path.join(ROOT, "uqa_jax"), tmp_path / "uqa_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
  schema = tmp_path / "uqa_jax" / "data" / "schema.py"
  schema.write_text(schema.read_text() + "\nfrom uqa_jax.stages import align  # a data module reaching up\n")
  out = _lint(str(tmp_path))
  assert out.returncode != 0
  assert "uqa_jax.data.schema -> uqa_jax.stages.align" in out.stdout, out.stdout
