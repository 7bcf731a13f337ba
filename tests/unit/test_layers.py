"""The package layers hold: every import contract in pyproject.toml (import-linter) is kept.
That a lower layer reaching up breaks them is shown on a copy of the package in
tests/integration/test_layers_break.py."""

import os

from importlinter import cli

from tests.conftest import ROOT


def test_the_import_contracts_are_kept(capsys):
  assert cli.lint_imports(config_filename=os.path.join(ROOT, "pyproject.toml"), no_cache=True) == 0, \
      capsys.readouterr().out
  out = capsys.readouterr().out
  assert "4 kept, 0 broken" in out, out
