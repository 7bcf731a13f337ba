"""Every command-line tool as a user runs it: `python -m` usage, defaults in --help, impossible
flag values refused in one line by argparse, before any work; a refusal one line unless --debug."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

TOOLS = ("uqa_jax.tools.score", "uqa_jax.tools.seeds", "uqa_jax.tools.sweep", "uqa_jax.llm.chat",
         "data_prep.synthetic", "data_prep.check", "data_prep.movielens", "data_prep.uqabench")


def run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("module", TOOLS)
def test_help_shows_python_m_usage_and_the_defaults(module):
  out = run(module, "--help")
  assert out.returncode == 0 and out.stdout.startswith(f"usage: python -m {module} ")
  assert "--debug" in out.stdout and out.stdout.count("(default:") >= 2  # --debug's and the tool's own


@pytest.mark.parametrize("module,args,message", [
    ("uqa_jax.tools.score", ("x.jsonl", "--samples", "0"), "argument --samples: expected an integer >= 1, got 0"),
    ("uqa_jax.llm.chat", ("hi", "--max-new-tokens", "-1"), "argument --max-new-tokens: expected an integer >= 1, got -1"),
    ("uqa_jax.llm.chat", ("hi", "--top-p", "0"), "argument --top-p: expected a number in (0, 1], got 0.0"),
    ("data_prep.synthetic", ("out", "--num-users", "0"), "--num-users=0; expected at least 1"),
    ("data_prep.synthetic", ("out", "--p-noise", "1.5"), "--p-noise=1.5"),
    ("data_prep.check", ("dir", "--max-per-kind", "x"), "argument --max-per-kind: expected an integer >= 1, got 'x'"),
    ("data_prep.movielens", ("out", "--keep-last", "1"), "argument --keep-last: expected an integer >= 2, got 1"),
])
def test_an_impossible_flag_is_one_usage_error_naming_it(module, args, message):
  out = run(module, *args)
  assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_a_refusal_is_one_line_and_debug_shows_its_traceback(tmp_path):
  missing = str(tmp_path / "absent.jsonl")
  out = run("uqa_jax.tools.score", missing)
  assert out.returncode == 2 and out.stderr.strip() == (
      f"python -m uqa_jax.tools.score: [Errno 2] No such file or directory: '{missing}'")
  debug = run("uqa_jax.tools.score", missing, "--debug")
  assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
  seeds = run("uqa_jax.tools.seeds", str(tmp_path / "a"), str(tmp_path / "b"))
  assert seeds.returncode == 2 and len(seeds.stderr.strip().splitlines()) == 1
  assert "report.json is missing; run the report stage" in seeds.stderr
  source = run("data_prep.movielens", str(tmp_path / "out"), "--source", str(tmp_path / "none"))
  assert source.returncode == 2 and "MovieLens source" in source.stderr and "not a directory" in source.stderr
  assert "Traceback" not in source.stderr


def test_a_truncated_gguf_is_named_with_its_size(tmp_path):
  from uqa_jax.llm import assets
  cut = tmp_path / "cut.gguf"
  with open(assets.smollm2_gguf_path(), "rb") as f:
    cut.write_bytes(f.read(50_000_000))  # the header and the first tensors whole, the rest cut
  out = run("uqa_jax.llm.chat", "hi", "--model", str(cut))
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert f"{cut}: not a readable GGUF file" in out.stderr and "50,000,000 bytes" in out.stderr
