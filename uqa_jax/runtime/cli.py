"""What every command-line tool shares: `python -m <module>` usage with defaults in `--help`,
number flags checked by argparse (one line naming the flag), and refusals printed as one line
(`--debug`: with the traceback).

  parser = cli.parser("uqa_jax.tools.score", __doc__)
  parser.add_argument("--samples", type=cli.at_least(1), default=1000)
  return cli.run(parser, work, argv)   # work(args) -> exit status
"""

import argparse
import sys

from uqa_jax.runtime import errors


class _Parser(argparse.ArgumentParser):
  """argparse shows a default only beside a help text: every flag gets one."""

  def add_argument(self, *args, **kwargs):
    if args and args[0].startswith("-") and not kwargs.get("help"):
      kwargs["help"] = " "
    return super().add_argument(*args, **kwargs)


def parser(module: str, doc: str) -> argparse.ArgumentParser:
  """An ArgumentParser whose usage reads `python -m module`, whose help shows every flag's
  default, and which has `--debug`."""
  p = _Parser(prog=f"python -m {module}", description=doc.strip().splitlines()[0],
              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--debug", action="store_true", help="show the traceback of a refusal too (default: one line)")
  return p


def at_least(low: int):
  """An argparse `type`: an integer >= low."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value
  parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
  return parse


def number_in(low: float, high: float, *, low_open: bool = False):
  """An argparse `type`: a float in [low, high] (`low_open`: (low, high])."""
  rule = f"{'(' if low_open else '['}{low}, {high}]"
  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a number in {rule}, got {text!r}") from None
    if not ((value > low if low_open else value >= low) and value <= high):
      raise argparse.ArgumentTypeError(f"expected a number in {rule}, got {value}")
    return value
  parse.__name__ = f"number in {rule}"
  return parse


def run(p: argparse.ArgumentParser, work, argv=None) -> int:
  """`work(args)`'s exit status; a refusal (errors.Refused, or an OSError on the user's files) is
  one line `prog: message` and exit status 2 (argparse's for bad input), unless --debug."""
  args = p.parse_args(argv)
  try:
    return work(args)
  except (errors.Refused, OSError) as e:
    errors.exit_refused(p.prog, e, args.debug, status=2)
  return 2  # unreachable: exit_refused exits or raises
