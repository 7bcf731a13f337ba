"""`align.adapter_init="titles"`: the adapter's first map fitted so soft tokens start in the LLM's space.

The oracle reader (`align.user="oracle_titles"`) showed that soft tokens the LLM already
understands are read more (identity start: twice the answer-NLL gain of a random map). This
gives the encoder's adapter the same kind of start: its token map `proj` (encoder width D ->
d_llm M, shared by every token of `mean` and `recent`) is set, before training, to the ridge
regression of each click's mean title-token embedding (what the oracle reads) on the encoder's
state at that click. A soft token then starts as the best linear reading of "the title of this
click" from the state: the `recent` tokens as the last clicks' titles, the mean token as the
history's mean title. Only the starting point changes; the map trains as before.

Shape letters: N fitted positions, D encoder width, M d_llm.
"""

import numpy as np

PARAM = "proj"  # the adapters whose tokens come from one Dense D -> M under this name


def check(adapter_params) -> None:
  """Raises unless the adapter's tokens come from one `proj` Dense map (mean, recent)."""
  p = adapter_params.get(PARAM)
  if not (isinstance(p, dict) and np.ndim(p.get("kernel")) == 2 and "bias" in p):
    raise ValueError(f"align.adapter_init='titles': the adapter has no '{PARAM}' Dense map "
                     f"(its params: {sorted(adapter_params)}); use the mean or recent adapter")


def ridge(states_NxD, targets_NxM, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray, float]:
  """(kernel [D, M], bias [M], R² of the fit): least squares with an intercept, the kernel's
  penalty `l2` times the mean diagonal of the centred Gram matrix (the intercept is free)."""
  x = np.asarray(states_NxD, np.float64)
  y = np.asarray(targets_NxM, np.float64)
  if x.shape[0] < 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"title fit: {x.shape[0]} states for {y.shape[0]} targets; expected the same number, at least 2")
  x_mean, y_mean = x.mean(0), y.mean(0)
  xc, yc = x - x_mean, y - y_mean
  gram = xc.T @ xc
  penalty = l2 * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
  kernel = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), xc.T @ yc)
  bias = y_mean - x_mean @ kernel
  residual = yc - xc @ kernel
  r2 = 1.0 - float((residual ** 2).sum()) / max(float((yc ** 2).sum()), 1e-12)
  return kernel.astype(np.float32), bias.astype(np.float32), r2


def r2(states_NxD, targets_NxM, kernel_DxM, bias_M) -> float:
  """R² of a fitted map on other (states, targets): 1 - residual / total sum of squares about
  the targets' own mean."""
  x, y = np.asarray(states_NxD, np.float64), np.asarray(targets_NxM, np.float64)
  residual = y - (x @ np.asarray(kernel_DxM, np.float64) + np.asarray(bias_M, np.float64))
  return 1.0 - float((residual ** 2).sum()) / max(float(((y - y.mean(0)) ** 2).sum()), 1e-12)


def apply(adapter_params, kernel_DxM, bias_M) -> dict:
  """The adapter's params with `proj` replaced by the fitted map (shapes checked)."""
  check(adapter_params)
  old = adapter_params[PARAM]
  if np.shape(old["kernel"]) != np.shape(kernel_DxM) or np.shape(old["bias"]) != np.shape(bias_M):
    raise ValueError(f"align.adapter_init='titles': fitted map {np.shape(kernel_DxM)}, adapter's "
                     f"'{PARAM}' kernel {np.shape(old['kernel'])}")
  return {**adapter_params, PARAM: {**old, "kernel": kernel_DxM, "bias": bias_M}}
