"""Prepare the official UQABench (Kaggle) files for use: `python -m data_prep.uqabench DIR [--out OUT]`.

DIR holds pretrain_data_{train,eval}.arrow and align_data_{train,eval}.arrow as downloaded.
Writes dataset_info.json (official vocab sizes, zh, Qwen2.5 tokenizer) into DIR, or into OUT
with links to the files, then runs the checker over the result; exits 1 on any problem.
"""

import sys

from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import official
from uqa_jax.runtime import cli


def main(argv=None) -> int:
  parser = cli.parser("data_prep.uqabench", __doc__)
  parser.add_argument("directory")
  parser.add_argument("--out", default=None, help="write dataset_info.json and links here instead (default: DIR)")
  return cli.run(parser, _prepare, argv)


def _prepare(args) -> int:
  official.prepare(args.directory, args.out)  # a bad file: arrow_io.DataFileError, one line
  report = checker.check_directory(args.out or args.directory)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
