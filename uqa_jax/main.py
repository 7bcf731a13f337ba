"""`python -m uqa_jax.main --config configs/<name>.py[:arg] [--config.key=value ...] [--workdir DIR]`.

Runs the stages the config lists, in pipeline order (data -> pretrain -> align -> evaluate ->
report), each through `uqa_jax.stages.run`: a stage whose outputs in the workdir were made with
other settings stops the run before anything is touched, naming the differing keys;
`--config.restart=<stage>` deletes that stage's outputs and everything after it first.
Every check that needs no data (names, unknown keys, ranges, unbuilt stages) runs before any work.
A refusal (`uqa_jax.runtime.errors.Refused`: a bad setting, a stale or busy workdir, a damaged
file) ends the run with one line naming the culprit; `--debug` shows its traceback as well.
"""

import contextlib
import importlib.util
import os
import sys
import time
import traceback

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from uqa_jax import stages
from uqa_jax.runtime import distributed
from uqa_jax.runtime import errors
from uqa_jax.runtime import lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file, optionally "
                                          "with an argument: configs/default.py:hstu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for all outputs (default: "
                               "workdir/<config name>[-<config argument>], e.g. workdir/default-hstu).")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "host:port of process 0, for a multi-process run "
                                   "(launch/local_multiprocess.sh, launch/slurm.sh); TPU pod slices and SLURM "
                                   "jobs with several tasks are joined without it")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "processes in the run (with --coordinator)")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "this process's index (with --coordinator)")
_DEBUG = flags.DEFINE_bool("debug", False, "show the traceback of a refused setting or input too "
                           "(by default a refusal is one line naming the culprit)")
_CACHE = flags.DEFINE_string("compilation_cache", None, "JAX's persistent compilation cache (default: "
                             "$JAX_COMPILATION_CACHE_DIR, else .jax_cache beside the workdir; 'off': none)")


def compilation_cache(flag: str | None, workdir: str) -> str:
  """The persistent compilation cache directory ('' for none): the flag, else JAX's environment
  variable, else `.jax_cache` beside the workdir (shared by the workdirs of one folder)."""
  if flag is not None:
    return "" if flag == "off" else os.path.abspath(flag)
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(os.path.dirname(workdir), ".jax_cache")


def _config_file(argv: list[str]):
  """The config `--config` names, loaded without the overrides (to explain a failing one)."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  path, _, arg = (spec or "").partition(":")
  module_spec = importlib.util.spec_from_file_location("uqa_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _explain_override(config, argv: list[str]) -> str | None:
  """For the first `--config.<key>=...` naming no key of `config` (the file's, without overrides):
  which part is unknown and the keys its block has."""
  for a in argv:
    if not a.startswith("--config."):
      continue
    node, where = config, "config"
    for part in a[len("--config."):].split("=", 1)[0].split("."):
      if not hasattr(node, "keys"):
        break
      if part not in node:
        return (f"{a}: {where} has no key {part!r}; its keys: {', '.join(sorted(node.keys()))}")
      node, where = node[part], f"{where}.{part}"
  return None


def _debug_asked(argv: list[str]) -> bool:
  return any(a == "--debug" or (a.startswith("--debug=") and a.split("=", 1)[1].lower() in ("1", "true", "t", "yes"))
             for a in argv)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag or an override naming no key of the config is one line (the
  traceback with --debug), not ml_collections' traceback. An error raised by the config file's
  own code keeps its traceback: it is a defect in that file."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a bad flag, or a config file that is missing
    if _debug_asked(argv):
      raise
    sys.exit(f"uqa-jax: {e} (--helpshort lists the flags; --debug shows the traceback)")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # from the file's code, or an override
    if _debug_asked(argv):
      raise
    try:
      config = _config_file(argv)  # the file alone loads: the override is what failed
    except Exception:  # pylint: disable=broad-exception-caught (the file's own defect: its traceback below)
      raise e from None
    overrides = " ".join(a for a in argv if a.startswith("--config."))
    explained = _explain_override(config, argv) or f"{overrides}: {e}"  # no such key, or a value of the wrong type
    sys.exit(f"uqa-jax: {explained} (--debug shows the traceback)")


def main(argv):
  try:
    _main(argv)
  except BaseException as e:  # pylint: disable=broad-exception-caught (reported, then the process ends)
    if jax.process_count() > 1 and not (isinstance(e, SystemExit) and e.code in (0, None)):
      _stop_all(e)
    if isinstance(e, errors.Refused):  # one line naming the culprit; a defect keeps its traceback
      errors.exit_refused("uqa-jax", e, _DEBUG.value)
    raise
  distributed.finish()


def _stop_all(error: BaseException) -> None:
  """Several processes: this one failed. Its error goes to the others (their watchdogs end them
  with it), is printed here, and the process ends: at once, or, for process 0, which hosts JAX's
  coordination service, once the others have had time to read it (its end would abort them);
  never through JAX's shutdown, which would wait for the others at a barrier they never reach."""
  distributed.announce_failure(error)
  if isinstance(error, SystemExit):
    print(error.code, file=sys.stderr, flush=True)
  elif isinstance(error, errors.Refused) and not _DEBUG.value:
    print(f"uqa-jax: {errors.describe(error)}", file=sys.stderr, flush=True)
  else:
    traceback.print_exception(error)
  sys.stdout.flush()
  if distributed.is_main():
    time.sleep(distributed.LINGER_S)
  os._exit(1)  # pylint: disable=protected-access


def _main(argv):
  # Orbax and grain log every file operation at INFO, and JAX an INFO line per absent backend
  # ("Unable to initialize backend 'tpu'") that reads as an error to a newcomer
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  try:
    if config is not None:
      config.get("stages")  # config_flags defers a file that failed to load to the first access
  except OSError as e:
    raise errors.Refused(f"--config: {e}".replace("Configuration is not available because of an earlier failure "
                                                  "to load: ", "")) from e
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/default.py")
  try:  # first: JAX joins the other processes before anything touches a device
    how = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    sys.exit(f"uqa-jax: {e}")
  stages.check_config(config)  # names, keys, ranges, blocks, paths, the mesh: ConfigError, one line
  distributed.watch_failures()  # several processes: another's failure (or process 0's death) ends this one
  if how and not distributed.is_main():  # process 0 prints; the others' errors still reach stderr
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  elif how:
    print(f"uqa-jax: {jax.process_count()} processes ({how}), {jax.device_count()} devices "
          f"({jax.local_device_count()} per process)")
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
      raise lock.WorkdirBusy(busy or "process 0 found the workdir in use by another run (its error says which)")
    _run(config, workdir)


def _run(config, workdir: str) -> None:
  """The listed stages in `workdir` (held): restart, the stale-state check, then each stage."""
  if config.restart and distributed.is_main():
    stages.restart(workdir, config.restart)
  distributed.barrier("restart")
  for name in config.stages:  # every listed stage's own outputs, before any work: a stale one stops here
    stages.status(workdir, name, config)
    for up in stages.upstream(name):  # an unlisted upstream stage must have finished already
      if up not in config.stages and stages.status(workdir, up, config) != "done":
        raise stages.StaleStateError(f"[{name}] needs the finished outputs of the {up} stage in "
                                     f"{os.path.join(workdir, up)}; add {up!r} to config.stages")
  for name in config.stages:
    start = time.time()
    print(f"[{name}] start")
    try:
      stages.run(name, config, workdir)
    except errors.Refused as e:
      e.stage = name  # shown first, as the stages' own messages do
      raise
    print(f"[{name}] done in {time.time() - start:.1f}s")
  if config.get("note"):
    print(f"uqa-jax: {config.note}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
