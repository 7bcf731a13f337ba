"""Validate a data set directory: `python -m data_prep.check DIR [--max-per-kind N]`.

Checks schema, types, id ranges against dataset_info.json (official sizes when it is
absent), empty or over-long sequences and chat JSON; prints every problem with file, row
and column; exits 1 if there is any.
"""

import argparse
import sys

from uqa_jax.data import checker


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("directory")
  parser.add_argument("--max-per-kind", type=int, default=20,
                      help="lines printed per (file, column, kind of problem); the rest are counted")
  args = parser.parse_args(argv)
  report = checker.check_directory(args.directory)
  print(report.format(args.max_per_kind))
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
