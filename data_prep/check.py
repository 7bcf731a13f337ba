"""Validate a data set directory: `python -m data_prep.check DIR [--max-per-kind N]`.

Checks schema, types, id ranges against dataset_info.json (official sizes when it is
absent), empty or over-long sequences and chat JSON; prints every problem with file, row
and column; exits 1 if there is any.
"""

import sys

from uqa_jax.data import checker
from uqa_jax.runtime import cli


def main(argv=None) -> int:
  parser = cli.parser("data_prep.check", __doc__)
  parser.add_argument("directory")
  parser.add_argument("--max-per-kind", type=cli.at_least(1), default=20,
                      help="lines printed per (file, column, kind of problem); the rest are counted")
  return cli.run(parser, _check, argv)


def _check(args) -> int:
  report = checker.check_directory(args.directory)
  print(report.format(args.max_per_kind))
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
