"""Orbax checkpoints of the train state together with the grain iterator's position.

Saving both in one step directory means a resumed run sees exactly the batches an
uninterrupted one would. Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous step as the latest.
"""

import os

import grain
import orbax.checkpoint as ocp


def _grain(data_iterator):
  """What grain's checkpoint handler saves and restores: the data iterator's own `get_state`
  (`distributed.GlobalBatches`: the position of the last batch handed out, however far its
  device prefetch has read)."""
  return data_iterator


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)  # Orbax needs an absolute path
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(_grain(data_iterator))))

  def restore(self, step: int, abstract_state, data_iterator):
    """Restores into `abstract_state`'s shapes and shardings; moves `data_iterator` in place."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(_grain(data_iterator))))
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
