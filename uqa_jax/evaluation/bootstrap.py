"""Bootstrap confidence intervals and paired p-values for accuracies, resampling units (users).

Questions of one user are not independent (one history answers all seven), so the unit that
is resampled is the user: each replicate draws as many users as there are, with replacement,
and takes the micro-averaged accuracy over their questions. `correct_U` and `count_U` are per
unit sums; one draw of weights `[S, U]` (how often each unit is drawn in each of S replicates)
is shared by every cell of a table, so the cells' intervals come from the same replicates.
"""

import numpy as np

CONFIDENCE = 0.95


def draws(num_units: int, samples: int, seed: int) -> np.ndarray:
  """[samples, num_units] multiplicities: each row a resample of the units with replacement."""
  if num_units < 1:
    raise ValueError("bootstrap: no units to resample")
  rng = np.random.default_rng(seed)
  return rng.multinomial(num_units, np.full(num_units, 1.0 / num_units), size=samples).astype(np.float64)


def _ratio(weights_SxU, num_U, den_U):
  den = weights_SxU @ den_U
  with np.errstate(invalid="ignore", divide="ignore"):
    out = (weights_SxU @ num_U) / den
  return out[den > 0]  # a replicate that drew none of the cell's questions says nothing about it


def interval(weights_SxU, correct_U, count_U, confidence: float = CONFIDENCE) -> tuple[float, float]:
  """Percentile interval of the micro-averaged accuracy sum(correct) / sum(count)."""
  reps = _ratio(weights_SxU, np.asarray(correct_U, np.float64), np.asarray(count_U, np.float64))
  tail = (1 - confidence) / 2 * 100
  lo, hi = np.percentile(reps, [tail, 100 - tail])
  return float(lo), float(hi)


def paired(weights_SxU, correct_a_U, correct_b_U, count_U, confidence: float = CONFIDENCE) -> dict:
  """Accuracy difference a - b on the same questions: estimate, interval, two-sided p-value.

  p is twice the share of replicates on the far side of zero (at least 1/(S+1), at most 1):
  the probability, under resampling, that the sign of the difference is the other one.
  """
  a, b = np.asarray(correct_a_U, np.float64), np.asarray(correct_b_U, np.float64)
  count = np.asarray(count_U, np.float64)
  diff = float((a.sum() - b.sum()) / count.sum())
  reps = _ratio(weights_SxU, a - b, count)
  tail = (1 - confidence) / 2 * 100
  lo, hi = np.percentile(reps, [tail, 100 - tail])
  below, above = np.sum(reps <= 0), np.sum(reps >= 0)
  p = min(1.0, 2 * (min(below, above) + 1) / (reps.size + 1))
  return {"difference": diff, "ci": [float(lo), float(hi)], "p_value": float(p), "samples": int(reps.size)}
