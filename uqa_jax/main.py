"""`python -m uqa_jax.main --config configs/<name>.py[:arg] [--config.key=value ...] [--workdir DIR]`.

Runs the stages the config lists, in pipeline order (data -> pretrain -> align -> evaluate ->
report), each through `uqa_jax.stages.run`: a stage whose outputs in the workdir were made with
other settings stops the run before anything is touched, naming the differing keys;
`--config.restart=<stage>` deletes that stage's outputs and everything after it first.
Every check that needs no data (names, unknown keys, unbuilt stages) runs before any work.
"""

import contextlib
import os
import sys
import time

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from uqa_jax import stages
from uqa_jax.runtime import distributed
from uqa_jax.runtime import lock
from uqa_jax.runtime import planner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file, optionally "
                                          "with an argument: configs/default.py:hstu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for all outputs (default: "
                               "workdir/<config name>[-<config argument>], e.g. workdir/default-hstu).")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "host:port of process 0, for a multi-process run "
                                   "(launch/local_multiprocess.sh, launch/slurm.sh); TPU pod slices and SLURM "
                                   "jobs with several tasks are joined without it")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "processes in the run (with --coordinator)")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "this process's index (with --coordinator)")
_CACHE = flags.DEFINE_string("compilation_cache", None, "JAX's persistent compilation cache (default: "
                             "$JAX_COMPILATION_CACHE_DIR, else .jax_cache beside the workdir; 'off': none)")


def compilation_cache(flag: str | None, workdir: str) -> str:
  """The persistent compilation cache directory ('' for none): the flag, else JAX's environment
  variable, else `.jax_cache` beside the workdir (shared by the workdirs of one folder)."""
  if flag is not None:
    return "" if flag == "off" else os.path.abspath(flag)
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(os.path.dirname(workdir), ".jax_cache")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/default.py")
  try:  # first: JAX joins the other processes before anything touches a device
    how = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    sys.exit(f"uqa-jax: {e}")
  try:
    stages.check_config(config)
  except (ValueError, stages.StaleStateError) as e:  # unknown names and keys, unbuilt or one-process stages
    sys.exit(f"uqa-jax: {e}")
  if how and not distributed.is_main():  # process 0 prints; the others' errors still reach stderr
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  elif how:
    print(f"uqa-jax: {jax.process_count()} processes ({how}), {jax.device_count()} devices "
          f"({jax.local_device_count()} per process)")
  logging.set_verbosity(logging.WARNING)  # Orbax and grain log every file operation at INFO
  # Progress lines reach a pipe or a log file as they are printed, whatever PYTHONUNBUFFERED says.
  sys.stdout.reconfigure(line_buffering=True)
  config_arg = flags.FLAGS["config"].config_filename
  # Absolute, so every stage (and Orbax, which refuses relative checkpoint paths) sees the same place.
  workdir = os.path.abspath(_WORKDIR.value or stages.default_workdir(config_arg))
  os.makedirs(workdir, exist_ok=True)
  cache = compilation_cache(_CACHE.value, workdir)
  # executables compiled once are read back by a rerun, a resumed run, another variant; 'off'
  # also overrides $JAX_COMPILATION_CACHE_DIR, which JAX would read by itself
  jax.config.update("jax_compilation_cache_dir", cache or None)
  print(f"uqa-jax: config {config_arg}, workdir {workdir}, stages {', '.join(config.stages)}; "
        f"compilation cache {cache or 'off'}")
  with contextlib.ExitStack() as held:
    busy = None
    if distributed.is_main():  # one run per workdir; in several processes, process 0 holds it
      try:
        held.enter_context(lock.hold(workdir, " ".join([os.path.basename(sys.executable)] + sys.argv)))
      except lock.WorkdirBusy as e:
        busy = str(e)
    # every process learns process 0's answer before any collective: none is left waiting
    if distributed.agree("busy" if busy else "held", ("held", "busy")) == "busy":
      sys.exit(f"uqa-jax: {busy or 'process 0 found the workdir in use by another run (its error says which)'}")
    _run(config, workdir)


def _run(config, workdir: str) -> None:
  """The listed stages in `workdir` (held): restart, the stale-state check, then each stage."""
  if config.restart and distributed.is_main():
    stages.restart(workdir, config.restart)
  distributed.barrier("restart")
  try:  # every listed stage's own outputs, before any work: a stale one stops the run here
    for name in config.stages:
      stages.status(workdir, name, config)
      for up in stages.upstream(name):  # an unlisted upstream stage must have finished already
        if up not in config.stages and stages.status(workdir, up, config) != "done":
          raise stages.StaleStateError(f"[{name}] needs the finished outputs of the {up} stage in "
                                       f"{os.path.join(workdir, up)}; add {up!r} to config.stages")
  except stages.StaleStateError as e:
    sys.exit(f"uqa-jax: {e}")
  for name in config.stages:
    start = time.time()
    print(f"[{name}] start")
    try:
      stages.run(name, config, workdir)
    except stages.StaleStateError as e:
      sys.exit(f"uqa-jax: {e}")
    except planner.DoesNotFit as e:
      sys.exit(f"uqa-jax: [{name}] {e}")
    print(f"[{name}] done in {time.time() - start:.1f}s")
  if config.get("note"):
    print(f"uqa-jax: {config.note}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
