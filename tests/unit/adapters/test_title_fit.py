"""The title fit's ridge regression against NumPy least squares; a planted linear map is found,
shuffled targets give R² near 0; a map of the wrong shape or an adapter without `proj` is refused."""

import numpy as np
import pytest

from uqa_jax.adapters import title_fit


def _data(n=2000, d=6, m=5, noise=0.1, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
  w, b = rng.normal(size=(d, m)), rng.normal(size=m)
  return x, x @ w + b + noise * rng.normal(size=(n, m)), w, b


def test_ridge_equals_numpy_least_squares_with_an_intercept():
  x, y, _, _ = _data(noise=1.0)
  kernel, bias, r2 = title_fit.ridge(x, y, l2=0.0)
  solution = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
  np.testing.assert_allclose(kernel, solution[:-1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(bias, solution[-1], rtol=1e-4, atol=1e-5)
  predicted = np.c_[x, np.ones(len(x))] @ solution
  want = 1 - ((y - predicted) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
  assert r2 == pytest.approx(want, rel=1e-6)


def test_planted_map_is_found_and_shuffled_targets_are_not():
  x, y, w, b = _data()
  kernel, bias, r2 = title_fit.ridge(x, y)
  assert r2 > 0.99
  np.testing.assert_allclose(kernel, w, atol=0.02)
  np.testing.assert_allclose(bias, b, atol=0.05)
  _, _, r2_shuffled = title_fit.ridge(x, np.random.default_rng(1).permutation(y))
  assert r2_shuffled < 0.01


def test_constant_states_give_the_mean_target_as_bias():
  """The zeros control: every state 0, so the tokens start as the mean title embedding."""
  _, y, _, _ = _data()
  kernel, bias, r2 = title_fit.ridge(np.zeros((len(y), 4)), y)
  assert not kernel.any() and r2 == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(bias, y.mean(0), rtol=1e-5)


def test_wrong_shapes_and_adapters_without_proj_are_refused():
  params = {"proj": {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)}}
  out = title_fit.apply(params, np.ones((4, 3), np.float32), np.ones(3, np.float32))
  assert out["proj"]["kernel"].sum() == 12 and params["proj"]["kernel"].sum() == 0
  with pytest.raises(ValueError, match="fitted map"):
    title_fit.apply(params, np.ones((5, 3)), np.ones(3))
  with pytest.raises(ValueError, match="no 'proj' Dense map.*mean or recent"):
    title_fit.check({"hidden": {}, "out": {}})
  with pytest.raises(ValueError, match="same number"):
    title_fit.ridge(np.zeros((3, 2)), np.zeros((4, 2)))


def test_r2_on_other_rows_is_one_for_the_planted_map_and_below_zero_for_a_wrong_one():
  x, y, w, b = _data()
  kernel, bias, r2 = title_fit.ridge(x, y)
  assert title_fit.r2(x, y, kernel, bias) == pytest.approx(r2, abs=1e-9)  # the fitted rows themselves
  rng = np.random.default_rng(5)  # new rows of the same map
  x2 = rng.normal(size=(500, x.shape[1])) * 2
  y2 = x2 @ w + b + 0.1 * rng.normal(size=(500, y.shape[1]))
  assert title_fit.r2(x2, y2, kernel, bias) > 0.99
  assert title_fit.r2(x, y, -w, b) < 0.0  # worse than predicting the mean
