"""runtime/checkpoint.py: a stale step (another state's tensors) is an error that names it and
leaves it in place; a step that cannot be read back leaves the data iterator where it was. Each
restore opens the directory anew, as a rerun does, on a state shaped like the stages' (optax
chains with empty states between the ones that hold tensors)."""

import os

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from uqa_jax.runtime import checkpoint


@flax.struct.dataclass
class State:
  step: int
  params: dict
  opt_state: tuple


def _state(width=4, extra=False):
  params = {"w": jnp.ones((3, width)), "b": jnp.zeros(width), **({"v": jnp.zeros(2)} if extra else {})}
  return State(step=3, params=params, opt_state=optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init(params))


def _saved(tmp_path, batches_read=3):
  """A checkpoint at step 1 of `_state()` and an iterator over 0..9 after `batches_read` reads,
  written by a Checkpointer of its own."""
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  for _ in range(batches_read):
    next(it)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpts"))
  ckpt.save(1, _state(), it)
  ckpt.close()
  return checkpoint.Checkpointer(str(tmp_path / "ckpts"))


def _fresh():
  return iter(grain.MapDataset.range(10).to_iter_dataset())


def test_stale_differences_by_name_and_shape():
  saved = {"a": (3, 4), "b": (2,), "c": ()}
  assert checkpoint.stale(saved, dict(saved)) == []
  assert checkpoint.stale(saved, {"a": (3, 5), "b": (2,), "d": ()}) == [
      "a: saved (3, 4), expected (3, 5)", "d: expected, not saved", "c: saved, not expected"]
  assert checkpoint.stale({f"k{i}": (1,) for i in range(5)}, {}, limit=2) == [
      "k0: saved, not expected", "k1: saved, not expected", "3 more"]


def test_a_matching_step_restores_and_moves_the_iterator(tmp_path):
  ckpt, it, lines = _saved(tmp_path), _fresh(), []
  step, state = ckpt.restore_latest(jax.eval_shape(_state), it, log=lines.append)
  assert step == 1 and next(it) == 3 and not lines
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(_state())):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("expected, named", [
    (lambda: _state(width=5), "opt_state/1/0/mu/w: saved (3, 4), expected (3, 5)"),
    (lambda: _state(extra=True), "opt_state/1/0/mu/v: expected, not saved")])
def test_a_stale_step_is_an_error_naming_it_and_is_left_in_place(tmp_path, expected, named):
  ckpt, it, lines = _saved(tmp_path), _fresh(), []
  with pytest.raises(checkpoint.CheckpointStale) as e:
    ckpt.restore_latest(jax.eval_shape(expected), it, log=lines.append)
  assert f"checkpoint {tmp_path / 'ckpts' / '1'} holds another state than this run's" in str(e.value)
  assert named in str(e.value) and "left in place" in str(e.value)
  assert os.path.isdir(tmp_path / "ckpts" / "1") and not os.path.exists(tmp_path / "ckpts-unreadable")
  assert next(it) == 0 and not lines


def test_an_unreadable_step_leaves_the_iterator_at_its_start(tmp_path):
  """The state's files cut in half, the iterator's position intact: the step is moved aside, no
  older one exists, and the iterator (restored or not before the state failed) starts at 0."""
  ckpt, it, lines = _saved(tmp_path), _fresh(), []
  for base, _, files in os.walk(tmp_path / "ckpts" / "1" / "state"):
    for f in files:
      with open(os.path.join(base, f), "r+b") as fh:
        fh.truncate(os.path.getsize(os.path.join(base, f)) // 2)
  assert ckpt.restore_latest(jax.eval_shape(_state), it, log=lines.append) == (None, None)
  assert "no older checkpoint: starting from step 0" in lines[-1]
  assert next(it) == 0
