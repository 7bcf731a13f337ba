"""Training curves where ML users look for them: TensorBoard event files, no TensorFlow needed.

`Scalars(logdir)` writes `{tag: number}` at a step through `tensorboardX` (a maintained writer of
the TensorBoard event format); every stage writes into `workdir/<stage>/tensorboard/`, so
`tensorboard --logdir workdir/` shows every stage of every workdir side by side. Only JAX
process 0 writes (the others hold no file). A non-finite or non-scalar value is an error naming
its tag, never a silent gap in a curve.
"""

import math
import os

import jax
import numpy as np

SUBDIR = "tensorboard"


def logdir(stage_dir: str) -> str:
  return os.path.join(stage_dir, SUBDIR)


class Scalars:
  """A context manager around one event file in `logdir` (process 0), or a no-op elsewhere. The
  file is opened at the first point; a resumed run calls `resume_at(step)` first, so TensorBoard
  drops the points an earlier run wrote from that step on (they are written again)."""

  def __init__(self, directory: str):
    self.directory = directory
    self._writer = None
    self._purge_step = None
    self._main = jax.process_index() == 0

  def resume_at(self, step: int) -> None:
    if self._writer is not None:
      raise RuntimeError(f"{self.directory}: resume_at({step}) after the first point was written")
    self._purge_step = int(step) if step else None

  def _open(self):
    if self._writer is None and self._main:
      import tensorboardX  # imported here: only process 0 of a stage that writes curves needs it
      self._writer = tensorboardX.SummaryWriter(self.directory, flush_secs=30, purge_step=self._purge_step)
    return self._writer

  def write(self, step: int, values: dict, prefix: str = "") -> None:
    """One point per tag (`prefix` + key) at `step`; values must be finite scalars (Python or 0-d arrays)."""
    for key, value in values.items():
      tag = prefix + key
      v = np.asarray(value)
      if v.shape != () or not np.issubdtype(v.dtype, np.number) and v.dtype != bool:
        raise ValueError(f"scalar {tag!r} at step {step}: expected one number, got {value!r}")
      v = float(v)
      if not math.isfinite(v):
        raise ValueError(f"scalar {tag!r} at step {step} is {v}")
      if self._open() is not None:
        self._writer.add_scalar(tag, v, int(step))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
