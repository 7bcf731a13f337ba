"""`python -m uqa_jax.tools.score FILE.jsonl [--variant official|strict|ranked|ranked_all]`: score any predictions file.

Reads JSONL in the official output format (`question`, `prediction`, `answer`; `task`, `user`
and `ranked_prediction` when present, as the evaluate stage writes them), so the PyTorch
original's outputs are scored by the same code. Prints accuracy per sub-task, group and overall
with 95% bootstrap intervals; `--compare OTHER.jsonl` adds the paired difference and p-value.
A record without `task` gets the official (Chinese) substring rule's task; English questions
(our `en` data) need the `task` field, which the evaluate stage always writes.
"""

import argparse
import json
import sys

from uqa_jax.evaluation import paired
from uqa_jax.evaluation import scoring
from uqa_jax.runtime import cli
from uqa_jax.runtime import errors


def main(argv=None) -> int:
  parser = cli.parser("uqa_jax.tools.score", __doc__)
  parser.add_argument("file", help="predictions JSONL")
  parser.add_argument("--variant", default="official", choices=scoring.VARIANTS)
  parser.add_argument("--compare", help="a second JSONL over the same questions: paired bootstrap")
  parser.add_argument("--samples", type=cli.at_least(1), default=scoring.BOOTSTRAP_SAMPLES,
                      help="bootstrap samples")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print the scores as JSON")
  return cli.run(parser, _score, argv)


def _score(args) -> int:
  try:
    records = scoring.read_jsonl(args.file)
    score = scoring.score_records(records, args.variant, samples=args.samples, seed=args.seed,
                                  where=f"{args.file}, ")
    comparison = None
    if args.compare:
      comparison = paired.compare(records, scoring.read_jsonl(args.compare), args.variant,
                                  samples=args.samples, seed=args.seed)
  except ValueError as e:  # the scorer's messages name the file, line and field
    raise errors.Refused(str(e)) from e
  if args.json:
    print(json.dumps({"score": score, "compare": comparison}, indent=2))
    return 0
  print("\n".join(scoring.format_score(score)))
  if comparison:
    c = comparison
    print(f"  vs {args.compare}: {c['difference']:+.1%} [{c['ci'][0]:+.1%}, {c['ci'][1]:+.1%}], "
          f"paired bootstrap p={c['p_value']:.3f} over {c['n']} questions")
  return 0


if __name__ == "__main__":
  sys.exit(main())
