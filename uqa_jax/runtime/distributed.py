"""Several JAX processes (TPU pod slices, multi-GPU hosts, `launch/local_multiprocess.sh`).

`initialize` calls `jax.distributed.initialize` when the command line names a coordinator
(`--coordinator host:port --num_processes N --process_id I`) or the environment is a cluster
JAX detects by itself (a TPU slice that names its workers, a SLURM job with several tasks, or
`UQA_DISTRIBUTED=1`: JAX's own detection, as on Cloud TPU VMs); otherwise the run is one
process. On CPU the processes talk through gloo. After it, `jax.devices()` lists every process's
devices and a mesh spans all of them; each process feeds its own devices.

Which process does what: process 0 (`is_main`) builds the data set, prints, and writes every
result and report file; the others wait for it at `barrier`s. Stage 1 runs on every process
(the batch in configs is global; each process reads its block of each batch, see
`data.batching.ProcessSlice`, and `GlobalBatches` makes the global arrays); Orbax saves and
restores checkpoints collectively.
"""

import os
import queue
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from uqa_jax.runtime import errors


def cluster_in_environment() -> str:
  """'tpu', 'slurm' or 'auto' when the environment is a multi-process cluster JAX can join by itself.

  `UQA_DISTRIBUTED=1` (launch/tpu_pod.sh sets it) asks for JAX's own detection, e.g. on Cloud TPU
  VMs, where the workers are found through the metadata server rather than variables.
  """
  if os.environ.get("UQA_DISTRIBUTED", "") not in ("", "0"):
    return "auto"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h]) > 1 or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  # inside an srun step with several tasks (what JAX's own SLURM detection reads); a batch
  # script's shell is not a task: it would stop in jax.distributed.initialize
  if os.environ.get("SLURM_STEP_NODELIST") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  return ""


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> str:
  """Joins the processes of this run; returns how ('' when it is one process)."""
  explicit = bool(coordinator)
  if not explicit and (num_processes or process_id != -1):
    raise ValueError("--num_processes / --process_id need --coordinator host:port (process 0's address); "
                     "without it every process would run alone")
  if explicit and (num_processes < 1 or not 0 <= process_id < num_processes):
    raise ValueError(f"--coordinator {coordinator}: needs --num_processes N >= 1 and --process_id in "
                     f"[0, N) (got {num_processes}, {process_id})")
  how = "flags" if explicit else cluster_in_environment()
  if not how:
    return ""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives (others unaffected)
  if explicit:
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()  # the TPU runtime or SLURM variables say who is who
  return how


def is_main() -> bool:
  return jax.process_index() == 0


class ProcessFailed(errors.Refused):
  """Another process of the run failed (its error is in the message) or stopped without a word."""


WATCH_S = 1.0  # how often the watchdog asks
GONE_POLLS = 3  # the coordination service unanswered this many times in a row: process 0 is gone
LINGER_S = 2.5 * WATCH_S  # process 0 stays this long after a failure, for the others to read it and leave
_STAGE_KEY = "uqa_jax/stage/{}/"  # + "word": process 0's word on a stage it runs alone, in JAX's key-value store


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel (JAX's own client)
  return jax_distributed.global_state.client


def _said(error: BaseException) -> str:
  """How a process's error reads to the others: a refusal's own line, else its type and message."""
  return errors.describe(error) if isinstance(error, errors.Refused) else f"{type(error).__name__}: {error}"


def tell_others(stage: str, error: BaseException | None) -> None:
  """Process 0, after a stage it ran alone: 'done', or its error, for the processes waiting in
  `wait_for_main` (a no-op with one process)."""
  if jax.process_count() > 1:
    word = "done" if error is None else f"failed: {_said(error)}"
    _client().key_value_set(_STAGE_KEY.format(stage) + "word", word)


def wait_for_main(stage: str) -> None:
  """The other processes, while process 0 runs `stage` alone: returns when it says 'done'; raises
  ProcessFailed with process 0's error when it failed, or when it is gone (its coordination
  service unanswered GONE_POLLS times in a row), instead of waiting in a collective with no end."""
  if jax.process_count() == 1:
    return
  unanswered = 0
  while True:
    try:
      said = _client().key_value_dir_get(_STAGE_KEY.format(stage))  # [] until process 0 has a word
      unanswered = 0
    except Exception as e:  # pylint: disable=broad-exception-caught (the store's errors come as one type)
      unanswered += 1
      if unanswered < GONE_POLLS:
        time.sleep(WATCH_S)
        continue
      raise ProcessFailed(f"[{stage}] process 0 stopped without a word while running it alone "
                          f"({errors.first_line(e)}); its log says why") from e
    if not said:
      time.sleep(WATCH_S)
      continue
    word = said[0][1]
    if word == "done":
      return
    raise ProcessFailed(f"[{stage}] process 0 failed: {word[len('failed: '):]}")


_FAILED_KEY = "uqa_jax/failed/"  # + the failing process's index: its error, for every other process
_finished = threading.Event()


def announce_failure(error: BaseException) -> None:
  """This process failed: its error goes into JAX's key-value store, where every other process's
  watchdog (`watch_failures`) reads it. Never raises (the process is failing already)."""
  if jax.process_count() == 1:
    return
  try:
    _client().key_value_set(f"{_FAILED_KEY}{jax.process_index()}", _said(error).strip()[:2000])
  except Exception:  # pylint: disable=broad-exception-caught (the store is gone too: the others notice that)
    pass


def watch_failures() -> None:
  """Starts a daemon thread that ends this process, within about WATCH_S seconds, when another
  process announces a failure (printing that process's error) or when process 0's coordination
  service stops answering (process 0 died): no process waits in a collective for one that is gone.
  `finish()` stops it before a normal exit."""
  if jax.process_count() == 1:
    return
  me = jax.process_index()

  def watch():
    unanswered = 0
    while not _finished.wait(WATCH_S):
      try:
        failed = [(k, v) for k, v in _client().key_value_dir_get(_FAILED_KEY) if not k.endswith(f"/{me}")]
        unanswered = 0
      except Exception as e:  # pylint: disable=broad-exception-caught (the store's errors come as one type)
        unanswered += 1
        if unanswered < GONE_POLLS or _finished.is_set():
          continue
        failed = [("0", f"stopped without a word (its coordination service: {errors.first_line(e)})")]
      if failed and not _finished.is_set():
        key, said = failed[0]
        print(f"uqa-jax: process {key.rsplit('/', 1)[-1]} failed: {said}; process {me} stops too", file=sys.stderr,
              flush=True)
        if me == 0:  # the coordination service's host: the others read and leave first (its end aborts them)
          time.sleep(LINGER_S)
        os._exit(1)  # pylint: disable=protected-access (the main thread may be inside a collective)

  threading.Thread(target=watch, name="uqa-jax-watchdog", daemon=True).start()


def finish() -> None:
  """A normal end: every process arrives here, then the watchdogs stop (before JAX's shutdown)."""
  if jax.process_count() > 1:
    barrier("uqa-jax-end")
  _finished.set()


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class GlobalBatches:
  """An iterator of this process's local numpy batches -> global jax.Arrays with `shardings`.

  With one process the local batch is the global one. With `prefetch` > 0 a background thread
  keeps that many batches already on the devices, so the host's reading and the transfer
  overlap the step. `get_state` / `set_state` are the local iterator's (JSON bytes: grain's
  checkpoint handler saves them, one file per process) as of the last batch handed out, never
  of one still waiting in the queue.
  """

  def __init__(self, local_iterator, shardings, prefetch: int = 0):
    self.local, self.shardings, self.prefetch = local_iterator, shardings, prefetch
    self._checked = set()  # (sharding, global shape) pairs whose row blocks were checked
    self._queue = self._thread = self._stop = None
    self._state = None  # the local state after the last batch handed out (None: the local one's)

  def __iter__(self):
    return self

  def _global(self, batch):
    count = jax.process_count()

    def make(x, sharding):
      x = np.asarray(x)
      shape = (x.shape[0] * count, *x.shape[1:])
      if count > 1 and (sharding, shape) not in self._checked:
        check_batch_block(sharding, shape)
        self._checked.add((sharding, shape))
      return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(make, batch, _tree_like(self.shardings, batch))

  def _fill(self, out: queue.Queue, stop: threading.Event):
    while not stop.is_set():
      try:
        item = (self._global(next(self.local)), self.local.get_state())
      except StopIteration:
        item = StopIteration()
      except BaseException as e:  # noqa: BLE001 - handed to the consumer, who raises it
        item = e
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, BaseException):
        return

  def __next__(self):
    if not self.prefetch:
      return self._global(next(self.local))
    if self._thread is None:
      self._queue, self._stop = queue.Queue(self.prefetch), threading.Event()
      self._thread = threading.Thread(target=self._fill, args=(self._queue, self._stop), daemon=True,
                                      name="device-prefetch")
      self._thread.start()
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._halt()
      raise item
    batch, self._state = item
    return batch

  def _halt(self):
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
    self._queue = self._thread = self._stop = None

  def get_state(self):
    return self.local.get_state() if self._state is None else self._state

  def set_state(self, state):
    self._halt()
    self._state = None
    self.local.set_state(state)

  def start_prefetch(self):
    """Called by grain's checkpoint handler after a restore; the thread starts at the next batch."""

  def close(self):
    self._halt()
    getattr(self.local, "close", lambda: None)()


def check_batch_block(sharding, global_shape) -> None:
  """The rows this process's devices hold must be its block [p*b, (p+1)*b) of the global batch,
  the rows `batching.ProcessSlice` reads for it; a mesh whose batch axes do not split across the
  processes that way (e.g. `tensor` spanning hosts) would feed another process's rows."""
  b = global_shape[0] // jax.process_count()
  p = jax.process_index()
  rows = {(i[0].start or 0, global_shape[0] if i[0].stop is None else i[0].stop)
          for i in sharding.addressable_devices_indices_map(global_shape).values()}
  covered = sorted(rows)
  if covered[0][0] < p * b or covered[-1][1] > (p + 1) * b:
    raise ValueError(f"mesh {dict(sharding.mesh.shape)}: process {p}'s devices hold batch rows "
                     f"{covered[0][0]}-{covered[-1][1]} of {global_shape[0]}, not its block {p * b}-{(p + 1) * b}; "
                     f"split the batch axes (data, fsdp) across processes, e.g. data or fsdp = the process count")


def _tree_like(shardings, batch):
  """One sharding for every leaf of `batch` (a dict of shardings may hold keys this batch lacks)."""
  if isinstance(shardings, dict):
    return {k: shardings[k] for k in batch}
  return jax.tree.map(lambda _: shardings, batch)


def agree(value: str, choices: tuple) -> str:
  """Process 0's `value` (one of `choices`) on every process: a decision each would otherwise take
  from its own view of a shared filesystem (a caching mount may show them different states)."""
  if jax.process_count() == 1:
    return value
  return choices[int(multihost_utils.broadcast_one_to_all(np.int32(choices.index(value))))]


def host_copy(tree):
  """Numpy copies of (possibly sharded across processes) arrays, the same on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)
