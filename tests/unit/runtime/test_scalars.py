import time

import numpy as np
import pytest

from uqa_jax.runtime import scalars
from tests.tensorboard_events import read_scalars


def test_scalars_are_read_back_as_tensorboard_reads_them(tmp_path):
  with scalars.Scalars(str(tmp_path)) as curves:
    curves.write(1, {"train/loss": 2.5, "train/learning_rate": np.float32(1e-3)})
    curves.write(2, {"train/loss": np.array(1.25)})
    curves.write(2, {"eval/answer_nll": 0.75, "skipped": np.bool_(False)})
  got = read_scalars(str(tmp_path))
  assert got["train/loss"] == [(1, 2.5), (2, 1.25)]
  assert got["train/learning_rate"] == [(1, pytest.approx(1e-3))]
  assert got["eval/answer_nll"] == [(2, 0.75)] and got["skipped"] == [(2, 0.0)]


@pytest.mark.parametrize("value, match", [(float("nan"), "'train/loss' at step 3 is nan"),
                                          (np.zeros(2), "expected one number"), ("x", "expected one number")])
def test_a_value_that_is_not_one_finite_number_is_an_error_naming_its_tag(tmp_path, value, match):
  with scalars.Scalars(str(tmp_path)) as curves, pytest.raises(ValueError, match=match):
    curves.write(3, {"train/loss": value})


def test_a_resumed_run_replaces_the_points_from_its_step_on(tmp_path):
  """The first run got to step 5 (its checkpoint was at 3); the resumed one writes 3.. again."""
  with scalars.Scalars(str(tmp_path)) as curves:
    for step in range(1, 6):
      curves.write(step, {"train/loss": float(step)})
  time.sleep(1.1)  # event files are named by the second they open in, and read in name order
  with scalars.Scalars(str(tmp_path)) as curves:
    curves.resume_at(3)
    for step in range(3, 7):
      curves.write(step, {"train/loss": 10.0 + step})
    with pytest.raises(RuntimeError, match="after the first point"):
      curves.resume_at(4)
  assert read_scalars(str(tmp_path))["train/loss"] == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0), (6, 16.0)]
