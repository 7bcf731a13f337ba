"""The package layers hold: every import contract in pyproject.toml (import-linter) is kept.
That a lower layer reaching up breaks them is shown on a copy of the package in
tests/integration/test_layers_break.py. The linter runs as its command (`lint-imports`, under a
second of a process): in-process its console writes to whatever stream pytest had open first."""

import os
import subprocess
import sys

from tests.conftest import ROOT

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                              "sys.exit(lint_imports_command())", "--no-cache"]


def test_the_import_contracts_are_kept():
  out = subprocess.run(LINT, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                       timeout=120, check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "4 kept, 0 broken" in out.stdout, out.stdout
