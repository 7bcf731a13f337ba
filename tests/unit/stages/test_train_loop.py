"""The training loop's cadence: progress, eval and checkpoint steps, the deferred metric fetch at
log steps, resumption's step count, and the stop at the first non-finite metric (nothing saved
after it). The step is a stand-in (a counter), so only the loop is under test."""

import dataclasses
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax.stages import train_loop


@flax.struct.dataclass
class State:
  step: jax.Array
  total: jax.Array


@dataclasses.dataclass
class Cadence:
  log_every: int = 4
  eval_every: int = 2
  checkpoint_every: int = 3


class FakeCheckpointer:
  """Records saves; `latest_step` as Orbax's manager would answer after them."""
  directory = "/ckpt"

  def __init__(self, events):
    self.events, self.saved = events, []

  def latest_step(self):
    return self.saved[-1][0] if self.saved else None

  def save(self, step, state, data):
    del data
    self.saved.append((step, int(state.total)))
    self.events.append(("save", step))

  def wait(self):
    pass


def _run(total_steps, events, *, bad_at=None, cadence=Cadence(), first=0, **kwargs):
  def step_fn(state, batch):
    n = int(state.step) + 1
    events.append(("step", n))
    loss = jnp.float32(np.nan if n == bad_at else 1.0 / n)
    return State(step=state.step + 1, total=state.total + batch), {"loss": loss, "grad_norm": jnp.float32(1.0)}

  real_fetch = train_loop._fetch_checked  # pylint: disable=protected-access

  def fetch(pending, *args):
    events.append(("fetch", [s for s, _ in pending]))
    return real_fetch(pending, *args)

  lines, ckpt = [], FakeCheckpointer(events)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train_loop, "_fetch_checked", fetch)
    state, rate = train_loop.run(step_fn, State(step=jnp.int32(first), total=jnp.int32(0)), iter(range(1, 100)),
                                 total_steps=total_steps, ckpt=ckpt, cfg=cadence, log=lines.append, name="t",
                                 evaluate=lambda s: {"total": int(s.total)}, fmt=lambda m: f"total {m['total']}",
                                 **kwargs)
  return state, rate, lines, ckpt


def test_progress_eval_and_checkpoint_steps_follow_the_cadence():
  events, curve = [], []
  state, rate, lines, ckpt = _run(7, events, curve=curve)
  assert int(state.step) == 7 and int(state.total) == sum(range(1, 8))
  assert [s for s, _ in ckpt.saved] == [3, 6, 7]  # every checkpoint_every steps, and the last step
  assert [s for s, total in ckpt.saved] == [3, 6, 7] and ckpt.saved[0][1] == 1 + 2 + 3  # the state after that step
  evals = [line for line in lines if "eval at step" in line]
  assert evals == ["t: eval at step 2: total 3", "t: eval at step 4: total 10", "t: eval at step 6: total 21"]
  progress = [int(re.match(r"t: step (\d+)/7", line).group(1)) for line in lines if re.match(r"t: step \d+/", line)]
  assert progress == [4, 7]  # every log_every steps, and the last step
  assert [step for step, _ in curve] == [4, 7]
  assert curve[0][1] == pytest.approx(np.mean([1 / n for n in range(1, 5)]), rel=1e-6)  # the mean loss since the last line
  assert rate is not None and rate > 0


def test_a_log_step_fetches_its_metrics_after_the_next_step_is_dispatched():
  events = []
  _run(9, events, cadence=Cadence(log_every=4, eval_every=0, checkpoint_every=100))
  at = events.index(("step", 5))
  assert ("fetch", [1, 2, 3, 4]) == events[at + 1]  # steps 1-4 come back while step 5 runs
  assert all(e[0] != "fetch" for e in events[events.index(("step", 4)):at])
  # checkpoint steps fetch at once: the state is checked before it is saved (and donated)
  assert events[-2:] == [("fetch", [9]), ("save", 9)]


def test_a_non_finite_loss_stops_the_run_before_any_later_save():
  events = []
  with pytest.raises(FloatingPointError, match=r"t: non-finite loss nan at step 5; stopped without saving\. "
                                               r"The newest checkpoint is step 3 in /ckpt"):
    _run(9, events, bad_at=5)
  saves = [e[1] for e in events if e[0] == "save"]
  assert saves == [3]  # step 6's checkpoint never happened: its state came out of the bad step


def test_a_resumed_run_steps_from_its_state_to_the_same_end():
  events = []
  state, _, lines, ckpt = _run(7, events, first=4)
  assert [e[1] for e in events if e[0] == "step"] == [5, 6, 7]
  assert [s for s, _ in ckpt.saved] == [6, 7]
  assert int(state.step) == 7


def test_skipped_steps_are_counted_and_too_many_in_a_row_stop_the_run():
  def guarded(skip_from):
    def step_fn(state, batch):
      n = int(state.step) + 1
      bad = n >= skip_from
      in_row = jnp.int32(max(0, n - skip_from + 1))
      return (State(step=state.step + 1, total=state.total + (0 if bad else batch)),
              {"loss": jnp.float32(np.nan if bad else 1.0), "skipped": jnp.bool_(bad), "bad_in_row": in_row})
    return step_fn

  ckpt = FakeCheckpointer([])
  with pytest.raises(FloatingPointError, match=r"3 steps in a row \(steps 4-6\).*max_bad_steps=3"):
    train_loop.run(guarded(4), State(step=jnp.int32(0), total=jnp.int32(0)), iter(range(1, 100)), total_steps=9,
                   ckpt=ckpt, cfg=Cadence(log_every=1, eval_every=0, checkpoint_every=100), log=lambda _: None,
                   name="t", max_bad_steps=3)
  assert ckpt.saved == []


def test_a_non_finite_loss_at_a_log_step_is_caught_by_the_deferred_fetch():
  events = []
  with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 4; stopped without saving\. "
                                               r"No checkpoint was saved yet"):
    _run(9, events, bad_at=4, cadence=Cadence(log_every=4, eval_every=0, checkpoint_every=100))
  assert events[-2:] == [("step", 5), ("fetch", [1, 2, 3, 4])]  # found while step 5 ran, before any save


class FakeScalars:
  def __init__(self):
    self.points = []

  def write(self, step, values, prefix=""):
    self.points.extend((step, prefix + tag, float(v)) for tag, v in values.items())


def test_progress_lines_and_evals_go_to_the_scalars_writer():
  events, curve, curves = [], [], FakeScalars()
  _run(7, events, curve=curve, scalars=curves, batch_size=4)
  at = lambda tag: [(s, v) for s, t, v in curves.points if t == tag]
  assert at("train/loss") == [(s, pytest.approx(v)) for s, v in curve]  # the mean loss of each progress line
  assert [s for s, _ in at("train/grad_norm")] == [s for s, _ in curve]
  assert [s for s, _ in at("train/examples_per_s")] == [4, 7]  # rates count from the first (compiling) step
  assert at("eval/total") == [(2, 3.0), (4, 10.0), (6, 21.0)]
