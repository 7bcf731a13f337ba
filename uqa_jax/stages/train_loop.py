"""The loop every training stage shares (pretrain now, align next): start or resume, step, log, save.

The loop never waits for the device between steps: each step's metrics stay on the device. At a
log step they are fetched after the *next* step is dispatched (as nanodo does), so the device
stays busy; at checkpoint and eval steps they are fetched at once, since the state must be
checked before it is saved (and it is donated to the next step). Every fetched metric (loss,
gradient norm, parameter norm) is checked: a non-finite value stops the run with an error
naming the first bad step and the newest good checkpoint, so no saved state went through a
non-finite step or came out of one.
State and the data iterator are checkpointed together, so a resumed run sees exactly the
batches an uninterrupted one would.
"""

import time

import jax
import numpy as np


def start(ckpt, init, state_shardings, data, seed: int, log, name: str):
  """The newest checkpoint in `ckpt` (moving `data` to its position), else `init(PRNGKey(seed))`."""
  latest = ckpt.latest_step()
  if latest is None:
    return init(jax.random.PRNGKey(seed))
  abstract = jax.tree.map(lambda s, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          state_shardings, jax.eval_shape(init, jax.random.PRNGKey(seed)))
  state = ckpt.restore(latest, abstract, data)
  log(f"{name}: resumed from step {latest} ({ckpt.directory})")
  return state


def _fetch_checked(pending, ckpt, name: str) -> list[dict]:
  """Host copies of the pending (step, metrics) pairs; FloatingPointError at the first non-finite."""
  values = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, values):
    bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(v))}
    if bad:
      ckpt.wait()  # a save still in flight finishes: it holds a state checked earlier
      latest = ckpt.latest_step()
      raise FloatingPointError(
          f"{name}: non-finite {', '.join(f'{k} {v}' for k, v in bad.items())} at step {step}; "
          "stopped without saving. " + (f"The newest checkpoint is step {latest} in {ckpt.directory}"
                                        if latest is not None else "No checkpoint was saved yet"))
  return values


def run(step_fn, state, data, *, total_steps: int, ckpt, cfg, log, name: str, evaluate=None):
  """Steps `state` to `total_steps` with batches from `data`; -> (state, training steps/s).

  `cfg` supplies the cadence: `log_every`, `checkpoint_every`, `eval_every` (0: never; the
  caller evaluates at the end). `evaluate(state) -> str` is logged at eval steps.
  """
  first = int(jax.device_get(state.step))
  pending, losses = [], []
  timed_from, t0, log_due = None, None, None

  def report(step):
    if step > timed_from:
      rate = (step - timed_from) / (time.time() - t0)
      log(f"{name}: step {step}/{total_steps} loss {np.mean(losses[-cfg.log_every:]):.4f} "
          f"{rate:.2f} steps/s ETA {(total_steps - step) / rate:.0f}s")

  for step in range(first, total_steps):
    state, metrics = step_fn(state, next(data))
    done = step + 1
    pending.append((done, metrics))
    if timed_from is None:  # the first step compiles: rates start after it
      jax.block_until_ready(metrics)
      timed_from, t0 = done, time.time()
    if log_due is not None:  # the log step's metrics, fetched while this step runs
      losses += [float(m["loss"]) for m in _fetch_checked(pending[:-1], ckpt, name)]
      pending = pending[-1:]
      report(log_due)
      log_due = None
    save = done % cfg.checkpoint_every == 0 or done == total_steps
    eval_now = bool(evaluate and cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps)
    due = done % cfg.log_every == 0 or done == total_steps
    if save or eval_now:
      losses += [float(m["loss"]) for m in _fetch_checked(pending, ckpt, name)]
      pending = []
      if due:
        report(done)
    elif due:
      log_due = done
    if save:
      ckpt.save(done, state, data)
    if eval_now:
      log(f"{name}: eval at step {done}: {evaluate(state)}")
  ckpt.wait()
  rate = (total_steps - timed_from) / max(time.time() - t0, 1e-9) if timed_from else 0.0
  return state, rate
