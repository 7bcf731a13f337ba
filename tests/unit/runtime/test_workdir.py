"""The fingerprint difference that the runner's stale-state error and align.llm_from's same-data
check both print."""

from uqa_jax.runtime import workdir


def test_fingerprint_diff_names_each_differing_key_sorted_with_both_values():
  old = {"b": [1, 2], "a": "x", "same": 3, "gone": None}
  new = {"b": [1, 3], "a": "x", "same": 3, "added": {"k": 1}}
  assert workdir.fingerprint_diff(old, new) == [
      ("added", "absent", '{"k": 1}'),
      ("b", "[1, 2]", "[1, 3]"),
      ("gone", "null", "absent"),  # a key set to null is not a key left out
  ]


def test_fingerprint_diff_of_equal_fingerprints_is_empty():
  assert workdir.fingerprint_diff({"a": 1, "b": None}, {"b": None, "a": 1}) == []
