"""How a wrapped library error is quoted inside a refusal, and how a refusal reads."""

from uqa_jax.runtime import errors


def test_first_line_quotes_one_line_and_an_empty_message_as_nothing():
  assert errors.first_line(ValueError("DATA_LOSS: bad chunk\n  at ocdbt/...\n")) == "DATA_LOSS: bad chunk"
  assert errors.first_line(ValueError("x" * 300)) == "x" * 200
  assert errors.first_line(ValueError("")) == ""  # str(e).splitlines()[0] would raise here


def test_describe_puts_the_stage_first_once():
  e = errors.Refused("data.path missing")
  assert errors.describe(e) == "data.path missing"
  e.stage = "data"
  assert errors.describe(e) == "[data] data.path missing"
  assert errors.describe(errors.Refused("[data] named already")) == "[data] named already"
