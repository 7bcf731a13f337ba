"""Orbax checkpoints of the train state together with the grain iterator's position.

Saving both in one step directory means a resumed run sees exactly the batches an
uninterrupted one would. Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous step as the latest.

Faults: a save first waits for the one before it (Orbax writes in the background), so a full
disk is reported with the step it hit; a save that cannot fit the disk is refused before it
starts, and one that fills it is reported (`runtime/disk.py`) with Orbax's partial directory
removed. A newest step that cannot be read back (truncated, damaged) is named, moved aside to
`<directory>-unreadable/<step>-<time>`, and the next newest is tried, down to none (then the run
starts from step 0, saying so, with the data iterator back at its start): the step resumed from
is always the newest that restores whole. A step whose saved tensors are not the ones this run
expects (another model, optimizer or code wrote it: names or shapes differ) is stale, not damaged:
an error naming it and the first tensors that differ, the step left where it is. Running out of
memory while restoring is not damage: it is raised as it is. With several processes a damaged
step is an error naming it (moving it aside is left to the user: each process would otherwise
decide alone).
"""

import os
import shutil
import time

import grain
import orbax.checkpoint as ocp

import jax

from uqa_jax.runtime import disk
from uqa_jax.runtime import errors


def _grain(data_iterator):
  """What grain's checkpoint handler saves and restores: the data iterator's own `get_state`
  (`distributed.GlobalBatches`: the position of the last batch handed out, however far its
  device prefetch has read)."""
  return data_iterator


class CheckpointUnreadable(errors.Refused, ValueError):
  """A checkpoint step that cannot be read back, in a run of several processes."""


class CheckpointStale(errors.Refused, ValueError):
  """A checkpoint step written by another model, optimizer or code than the run's."""


def _shapes(tree) -> dict[str, tuple]:
  """{"opt_state/0/mu/params/kernel": shape} of a state tree or of Orbax's metadata of one (the
  names Orbax saves under: dict keys, attribute names, sequence indices)."""
  return {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(tree, sep="/").items() if hasattr(v, "shape")}


def stale(saved: dict[str, tuple], expected: dict[str, tuple], limit: int = 3) -> list[str]:
  """The differences between a saved state's tensors and the expected ones, by name and shape
  (dtypes are not compared: a Python int step saves as int64 and restores cast), up to `limit`
  then a count; [] when they match."""
  out = [f"{k}: saved {saved[k]}, expected {expected[k]}" for k in sorted(saved.keys() & expected.keys())
         if saved[k] != expected[k]]
  out += [f"{k}: expected, not saved" for k in sorted(expected.keys() - saved.keys())]
  out += [f"{k}: saved, not expected" for k in sorted(saved.keys() - expected.keys())]
  return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])


def _out_of_memory(error: Exception) -> bool:
  text = str(error)
  return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)  # Orbax needs an absolute path
    self.max_to_keep = max_to_keep
    self.manager = self._manager()
    self._writing = None  # the step directory an unfinished background save is writing

  def _manager(self):
    # the handlers named up front: a new run's manager reads a step's metadata before restoring it
    return ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def newest(self) -> str | None:
    """The newest finished step's directory (what a rerun resumes from), or None."""
    step = self.manager.latest_step()
    return None if step is None else os.path.join(self.directory, str(step))

  def save(self, step: int, state, data_iterator) -> None:
    self.wait()  # the previous save ends first: its own full disk is reported with its own step
    path, nbytes = os.path.join(self.directory, str(step)), disk.tree_bytes(state)
    disk.require(path, nbytes, "checkpoint", self.newest())
    with self._reported(path, nbytes):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(_grain(data_iterator))))
    self._writing = path

  def restore(self, step: int, abstract_state, data_iterator):
    """Restores into `abstract_state`'s shapes and shardings; moves `data_iterator` in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(_grain(data_iterator))))
    return restored["state"]

  def _check_not_stale(self, step: int, abstract_state) -> None:
    """CheckpointStale when step `step`'s saved tensors differ from `abstract_state`'s by name or
    shape; a step whose metadata cannot be read is left for the restore to find damaged."""
    try:
      saved = _shapes(self.manager.item_metadata(step)["state"].tree)
    except Exception:  # pylint: disable=broad-exception-caught (unreadable metadata: damage, handled below)
      return
    if differ := stale(saved, _shapes(abstract_state)):
      where = os.path.join(self.directory, str(step))
      raise CheckpointStale(
          f"checkpoint {where} holds another state than this run's (another model, optimizer or code wrote "
          f"it): {'; '.join(differ)}. It is left in place: rerun with the code and config that wrote it, or "
          f"move {self.directory} away to start this stage over")

  def restore_latest(self, abstract_state, data_iterator, log):
    """(step, state) from the newest step that restores whole, else (None, None) with
    `data_iterator` where it was; each newer step that fails is logged by name and moved aside, so
    a later save of that step does not collide. A stale step (another state's tensors) is an error."""
    start = data_iterator.get_state()  # a failed restore may have moved it before the state failed
    while (step := self.manager.latest_step()) is not None:
      self._check_not_stale(step, abstract_state)
      try:
        return step, self.restore(step, abstract_state, data_iterator)
      except Exception as e:  # pylint: disable=broad-exception-caught (a read failure: the step is bad)
        if _out_of_memory(e):
          raise
        data_iterator.set_state(start)
        where = os.path.join(self.directory, str(step))
        if jax.process_count() > 1:
          raise CheckpointUnreadable(f"checkpoint {where} cannot be read back ({type(e).__name__}: "
                                     f"{errors.first_line(e)}); move it out of "
                                     f"{self.directory} and rerun to resume from the one before") from e
        aside = os.path.join(f"{self.directory}-unreadable", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.replace(where, aside)
        self.manager.close()
        self.manager = self._manager()
        older = self.manager.latest_step()
        log(f"checkpoint {os.path.join(self.directory, str(step))} cannot be read back ({type(e).__name__}: "
            f"{errors.first_line(e)}); moved to {aside}; "
            + (f"resuming from the previous one, step {older}" if older is not None
               else "no older checkpoint: starting from step 0"))
    return None, None

  def _reported(self, path: str, nbytes: int | None = None):
    return disk.reported(path, "checkpoint", self.newest(), cleanup=self._remove_partial, nbytes=nbytes)

  def _remove_partial(self) -> None:
    """Orbax's temporary directories of unfinished saves (a full disk stopped them), once the
    saves still in flight have ended (an earlier step's may yet complete)."""
    try:
      self.manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-exception-caught (that save failed too: its directory goes below)
      pass
    if os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        if ".orbax-checkpoint-tmp" in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def wait(self) -> None:
    with self._reported(self._writing or self.directory):
      self.manager.wait_until_finished()
    self._writing = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def prune(directory: str, keep: str, log, key: str = "keep_checkpoints") -> None:
  """After a finished stage: keep `all` checkpoints, the `last` one, or `none` (nothing resumes a
  finished stage; its export is what later stages read). Logs what went and the bytes freed;
  `key` is the setting's name in the message."""
  if keep not in ("all", "last", "none"):
    raise ValueError(f"{key}={keep!r}; expected all, last or none")
  if keep == "all" or not os.path.isdir(directory):
    return
  steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
  drop = ([directory] if keep == "none" else  # and whatever is not a finished step (an unfinished save's)
          [os.path.join(directory, n) for n in os.listdir(directory) if not steps or n != str(steps[0])])
  drop += [d for d in (f"{directory}-unreadable",) if os.path.isdir(d)]  # steps that could not be read back
  freed = sum(disk.dir_bytes(d) if os.path.isdir(d) else os.path.getsize(d) for d in drop)
  for d in drop:
    if os.path.isdir(d):
      shutil.rmtree(d)
    else:
      os.remove(d)
  kept = "deleted them all" if keep == "none" else f"kept step {steps[0]}" if steps else "none were saved"
  log(f"checkpoints: the stage is done: {kept}, freed {disk.human(freed)} in {directory} ({key}={keep}; "
      "'all' keeps every one)")
