"""Import MovieLens-100k from the recbole wheel: `python -m data_prep.movielens OUT [--seed S]`.

Writes the official format (genres -> cate bags, decade -> brand, empty shop/seller bags),
with QA for all seven sub-tasks, then runs the checker; exits 1 on any problem.
"""

import argparse
import sys

from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.llm import tokenizer as tokenizer_lib


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out")
  parser.add_argument("--model", default="smollm2")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  movielens.build_dataset(args.out, tokenizer_lib.load_tokenizer(args.model),
                          tokenizer_lib.describe(args.model), seed=args.seed)
  report = checker.check_directory(args.out)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
