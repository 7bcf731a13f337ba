"""Prepare the official UQABench (Kaggle) files for use: `python -m data_prep.uqabench DIR [--out OUT]`.

DIR holds pretrain_data_{train,eval}.arrow and align_data_{train,eval}.arrow as downloaded.
Writes dataset_info.json (official vocab sizes, zh, Qwen2.5 tokenizer) into DIR, or into OUT
with links to the files, then runs the checker over the result; exits 1 on any problem.
"""

import argparse
import sys

from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import official


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("directory")
  parser.add_argument("--out", default=None, help="write dataset_info.json and links here instead")
  args = parser.parse_args(argv)
  try:
    official.prepare(args.directory, args.out)
  except arrow_io.DataFileError as e:
    print(f"ERROR {e}")
    return 1
  report = checker.check_directory(args.out or args.directory)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
