"""The loop every training stage shares (pretrain, align): start or resume, step, log, save, and
the eval pass over a file. Its length and cadence are the block's (`recipes.TrainingLoop`).

The loop never waits for the device between steps: each step's metrics stay on the device. At a
log step they are fetched after the *next* step is dispatched (as nanodo does), so the device
stays busy; at checkpoint and eval steps they are fetched at once, since the state must be
checked before it is saved (and it is donated to the next step). Every fetched metric (loss,
gradient norm, parameter norm) is checked: a non-finite value stops the run with an error
naming the first bad step and the newest good checkpoint, so no saved state went through a
non-finite step or came out of one. A step that guards itself (align: a non-finite loss,
gradient or updated parameter leaves the state as it was) reports `skipped` and `bad_in_row`;
such steps are counted, and `max_bad_steps` of them in a row stop the run the same way.
State and the data iterator are checkpointed together, so a resumed run sees exactly the
batches an uninterrupted one would. With `scalars` (`runtime.scalars.Scalars`), every progress
line's figures (mean loss, steps/s, examples/s and the last step's scalar metrics: gradient and
parameter norms, learning rates) and every eval's metrics also go to TensorBoard.
"""

import dataclasses
import time

import jax
import numpy as np

from uqa_jax.data import pipeline
from uqa_jax.runtime import distributed
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel


EVAL_WINDOW = 1 << 40  # batches: one length-sorted window over any file


def eval_batches(fn, path: str, pipe, sharding, tokenizer=None, reconstruct=None):
  """Host copies of `fn(batch)` for every batch of the file at `path`, once, the last batch
  padded (its padding rows marked `valid` False); batches are global arrays on `sharding`.
  Align files cut to `input.widths` are read sorted by chat length first (every row once; an
  eval sums over rows), so most batches take the narrow widths: one eval executable per width.
  With `reconstruct` (`data/reconstruct.Task`) the rows are reconstruction rows, read in a
  seeded shuffled order (neighbours are then mostly other users' rows)."""
  window = EVAL_WINDOW if tokenizer is not None and pipe.widths else 0
  cfg = dataclasses.replace(pipe, shuffle=reconstruct is not None, num_epochs=1, drop_remainder=False, workers=0,
                            length_window=window)
  batches = iter(pipeline.make_dataset(path, cfg, tokenizer=tokenizer, reconstruct=reconstruct))
  for batch in distributed.GlobalBatches(batches, sharding):
    yield jax.device_get(fn(batch))


def start(ckpt, init, state_shardings, data, seed: int, log, name: str):
  """The newest checkpoint in `ckpt` that reads back whole (moving `data` to its position; an
  unreadable newer one is named and moved aside; a stale one, another state's tensors, is an
  error), else `init(PRNGKey(seed))` with `data` at its start."""
  if ckpt.latest_step() is None:
    return init(keys.host(seed))
  latest, state = ckpt.restore_latest(
      parallel.abstract(jax.eval_shape(init, keys.abstract()), state_shardings), data, log)
  if latest is None:
    return init(keys.host(seed))
  log(f"{name}: resumed from step {latest} ({ckpt.directory})")
  return state


def _stop(ckpt, message: str):
  ckpt.wait()  # a save still in flight finishes: it holds a state checked earlier
  latest = ckpt.latest_step()
  raise FloatingPointError(message + "; stopped without saving. " + (
      f"The newest checkpoint is step {latest} in {ckpt.directory}" if latest is not None
      else "No checkpoint was saved yet"))


def _fetch_checked(pending, ckpt, name: str, max_bad_steps: int) -> list[dict]:
  """Host copies of the pending (step, metrics) pairs; FloatingPointError at the first bad one.

  A step that reports `skipped` (it left the state untouched) is bad only when it ends a run of
  `max_bad_steps` skipped steps in a row; any other step is bad when a metric is non-finite.
  """
  values = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, values):
    if metrics.get("skipped", False):
      in_row = int(metrics["bad_in_row"])
      if in_row >= max_bad_steps:
        _stop(ckpt, f"{name}: {in_row} steps in a row (steps {step - in_row + 1}-{step}) had a non-finite "
                    f"loss, gradient or updated parameter and were skipped (max_bad_steps={max_bad_steps})")
      continue
    bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(v))}
    if bad:
      _stop(ckpt, f"{name}: non-finite {', '.join(f'{k} {v}' for k, v in bad.items())} at step {step}")
  return values


NOT_CURVES = ("skipped", "bad_in_row")  # step metrics that are counters, not curves


def run(step_fn, state, data, *, total_steps: int, ckpt, cfg, log, name: str, evaluate=None, fmt=None,
        batch_size: int | None = None, describe=None, max_bad_steps: int = 0, curve: list | None = None,
        scalars=None, timings: dict | None = None, started: float | None = None):
  """Steps `state` to `total_steps` with batches from `data`; -> (state, training steps/s or None).

  `cfg` supplies the cadence: `log_every`, `checkpoint_every`, `eval_every` (0: never; the
  caller evaluates at the end). `evaluate(state) -> {metric: number}` runs at eval steps and is
  logged as `fmt(metrics)` (default: every metric). `timings`, when given, receives
  `first_step_seconds`: from `started` (a `time.time()`; default this call) to the first step's
  end, its compilation included. Progress
  lines give the mean loss of the steps since the last line, steps/s (and examples/s when
  `batch_size` is given), ETA, skipped steps so far, and `describe(metrics) -> str` of the
  last step's metrics. `curve`, when given, receives [step, mean loss] at every progress line
  (full precision; the steps this call ran).
  """
  first = int(jax.device_get(state.step))
  called = time.time() if started is None else started
  fmt = fmt or (lambda m: " ".join(f"{k} {v:.4f}" for k, v in m.items()))
  pending, window = [], []
  skipped = int(jax.device_get(getattr(state, "skipped", 0)))  # a resumed run's earlier skips too
  timed_from, t0, log_due = None, None, None

  def take(values):
    nonlocal skipped
    for m in values:
      skipped += bool(m.get("skipped", False))
      window.append(m)

  def report(step):
    losses = [float(m["loss"]) for m in window if not m.get("skipped", False)]
    if curve is not None and losses:
      curve.append([step, float(np.mean(losses))])
    rate = (step - timed_from) / (time.time() - t0) if step > timed_from else None
    if scalars is not None:
      good = [m for m in window if not m.get("skipped", False)]  # a skipped step's metrics may be NaN
      last = {f"train/{k}": v for k, v in (good[-1] if good else {}).items() if k not in NOT_CURVES and k != "loss"}
      speed = {} if rate is None else {"train/steps_per_s": rate, **({"train/examples_per_s": rate * batch_size}
                                                                    if batch_size else {})}
      scalars.write(step, {**({"train/loss": np.mean(losses)} if losses else {}), **speed, **last})
    if rate is not None:
      parts = [f"{name}: step {step}/{total_steps}",
               f"loss {np.mean(losses):.4f}" if losses else "loss -",
               f"{rate:.2f} steps/s" + (f" ({rate * batch_size:.1f} examples/s)" if batch_size else ""),
               f"ETA {(total_steps - step) / rate:.0f}s"]
      if "skipped" in window[-1]:
        parts.append(f"skipped {skipped}")
      if describe is not None:
        parts.append(describe(window[-1]))
      log(" ".join(parts))
    window.clear()

  for step in range(first, total_steps):
    state, metrics = step_fn(state, next(data))
    done = step + 1
    pending.append((done, metrics))
    if timed_from is None:  # the first step compiles: rates start after it
      jax.block_until_ready(metrics)
      timed_from, t0 = done, time.time()
      log(f"{name}: first step done {t0 - called:.1f}s after the stage started (its compilation included)")
      if timings is not None:
        timings["first_step_seconds"] = round(t0 - called, 3)
    if log_due is not None:  # the log step's metrics, fetched while this step runs
      take(_fetch_checked(pending[:-1], ckpt, name, max_bad_steps))
      pending = pending[-1:]
      report(log_due)
      log_due = None
    save = done % cfg.checkpoint_every == 0 or done == total_steps
    eval_now = bool(evaluate and cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps)
    due = done % cfg.log_every == 0 or done == total_steps
    if save or eval_now:
      take(_fetch_checked(pending, ckpt, name, max_bad_steps))
      pending = []
      if due:
        report(done)
    elif due:
      log_due = done
    if save:
      ckpt.save(done, state, data)
    if eval_now:
      metrics = evaluate(state)
      log(f"{name}: eval at step {done}: {fmt(metrics)}")
      if scalars is not None:
        scalars.write(done, metrics, prefix="eval/")
  ckpt.wait()
  if timed_from is None or timed_from == total_steps:  # nothing ran, or only the compiling step
    return state, None
  return state, (total_steps - timed_from) / max(time.time() - t0, 1e-9)
