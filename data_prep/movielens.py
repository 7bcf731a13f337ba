"""Import a MovieLens release: `python -m data_prep.movielens OUT [--source DIR] [--seed S] [--keep-last N]`.

Without `--source`, ml-100k from the recbole wheel. `DIR` may hold RecBole atomic files
(`<name>.inter` + `<name>.item`) or a GroupLens release as downloaded (`u.data` + `u.item`;
`ratings.dat` + `movies.dat`; `ratings.csv` + `movies.csv`); the layout is detected from the
files. Writes the official format (genres -> cate bags, decade -> brand, empty shop/seller
bags) with QA for all seven sub-tasks, prints the answer floors, then runs the checker; exits 1
on any problem.
"""

import sys

from uqa_jax.data import answers as answers_lib
from uqa_jax.data import build
from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.data import schema
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.runtime import cli
from uqa_jax.runtime import errors


def main(argv=None) -> int:
  parser = cli.parser("data_prep.movielens", __doc__)
  parser.add_argument("out")
  parser.add_argument("--source", default=None, help="a MovieLens release's folder (default: ml-100k from recbole)")
  parser.add_argument("--model", default="smollm2", help="the tokenizer: smollm2, a Hugging Face directory or a .gguf")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--keep-last", type=cli.at_least(2), default=schema.MAX_LEN,
                      help="the most recent ratings written per user (the data block's max_len)")
  parser.add_argument("--min-item-count", type=cli.at_least(1), default=build.Filters.min_item_count)
  return cli.run(parser, _build, argv)


def _build(args) -> int:
  try:
    info = movielens.build_dataset(
        args.out, tokenizer_lib.load_tokenizer(args.model), tokenizer_lib.describe(args.model),
        source=args.source, seed=args.seed, max_len=args.keep_last,
        filters=build.Filters(min_item_count=args.min_item_count))
  except ValueError as e:  # the importer's messages name the file and line
    raise errors.Refused(str(e)) from e
  print("\n".join(answers_lib.format_floors(info["answers"]["eval"], schema.TASKS)))
  report = checker.check_directory(args.out)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
