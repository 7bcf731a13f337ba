"""The stages `main` runs, chosen by name from `choices.STAGES`, and the rules that keep runs honest.

Each stage is a module `uqa_jax/stages/<name>.py` exporting
  BLOCKS                 the top-level config blocks it reads
  ALWAYS_RUN             (optional) True: never reused, it runs every time (the report)
  PROCESSES              (optional) with several JAX processes: "all" run it together (Stages 1-2),
                         "main" process 0 runs it while the others wait (data, report); absent:
                         one process only (a multi-process run stops before it, saying so)
  UPSTREAM               the stages whose outputs it reads
  VERSION                the version of what it computes (1 if absent): bump it when the
                         same settings would now give other outputs (a formula, a constant in the
                         code, the layout or meaning of its files); not for speed, messages or
                         refactors. Above 1 it enters the fingerprint as `code_version.<name>`
                         (1, the code before versions existed, stays out so older workdirs stay
                         valid), so a bump makes that stage and every later one stale
  fingerprint(config)    the settings its outputs depend on (building them checks the config;
                         `check_config` builds every stage's, listed or not)
  check_run(config)      (optional) what this run's processes allow, checked when it is listed
  run(config, workdir)   the work; returns a JSON-able dict
  finish(config, workdir, log)  (optional) after result.json is written: drop what nothing
                         reads any more (a training stage's checkpoints, `keep_checkpoints`)
`run(name, config, workdir)` below wraps a stage: it checks that every upstream stage finished
for this same config, compares the stage's own fingerprint with the one stored in
`workdir/<name>/fingerprint.json` (same: resume or reuse; different: `StaleStateError`, nothing
touched), and writes `workdir/<name>/result.json` when the stage returns, with the code that made
it (`code`: package version, git commit; `runtime/provenance.py`) and what the stage compiled (`compile`: executables, persistent-cache hits, compile and wall seconds). A stage's fingerprint
holds its upstream stages' settings too, so a changed data set invalidates the encoder trained
on it. `restart(workdir, name)` is the only place outputs are deleted, and only when asked.
"""

import importlib
import json
import os
import re
import shutil
import sys

import jax

from uqa_jax.config import choices
from uqa_jax.config.blocks import ConfigError
from uqa_jax.llm import assets
from uqa_jax.runtime import atomic
from uqa_jax.runtime import compile_stats
from uqa_jax.runtime import parallel
from uqa_jax.runtime import scalars
from uqa_jax.runtime import distributed
from uqa_jax.runtime import workdir as workdir_lib
from uqa_jax.runtime import errors
from uqa_jax.runtime import provenance

RESULT, FINGERPRINT = workdir_lib.RESULT, workdir_lib.FINGERPRINT
GLOBAL_KEYS = ("seed", "stages", "restart", "note")  # top-level config keys every run has


def default_workdir(config_arg: str) -> str:
  """`configs/default.py:hstu` -> `workdir/default-hstu`: each config and argument its own workdir."""
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdir", name + ("-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", arg) if arg else ""))


class StaleStateError(errors.Refused, RuntimeError):
  """A workdir holds outputs made with other settings than the config asks for."""


def check_processes(name: str) -> str:
  """Stage `name`'s PROCESSES; StaleStateError when this run has several processes and it runs in one."""
  processes = getattr(get(name), "PROCESSES", "one")
  if jax.process_count() > 1 and processes == "one":
    raise StaleStateError(f"[{name}] runs in one process for now: drop --num_processes, or list only stages "
                          f"that run on several (data, pretrain, align, report); the stages before it leave their "
                          f"outputs in the workdir for a one-process run")
  return processes


def get(name: str):
  """The module of stage `name`; a listed but unbuilt stage is an error naming it."""
  if name not in choices.STAGES:
    raise ConfigError(f"unknown stage {name!r}; expected one of {', '.join(choices.STAGES)}")
  try:
    return importlib.import_module(f"uqa_jax.stages.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"uqa_jax.stages.{name}":
      raise
    raise ConfigError(
        f"stage {name!r} is listed in config.stages but not implemented yet; implemented stages: "
        f"{', '.join(implemented())}") from None


def implemented() -> list[str]:
  here = os.path.dirname(__file__)
  return [s for s in choices.STAGES if os.path.exists(os.path.join(here, f"{s}.py"))]


def upstream(name: str) -> list[str]:
  """Every stage `name` depends on, directly or not, in pipeline order."""
  out = []
  for up in get(name).UPSTREAM:
    out += [s for s in upstream(up) + [up] if s not in out]
  return out


def _flat(tree, prefix="") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: json.loads(json.dumps(tree))}  # tuples and lists compare equal after JSON


def fingerprint(name: str, config) -> dict:
  """Flat {config key: value} of what stage `name`'s outputs depend on, upstream stages included."""
  out = {}
  for stage in upstream(name) + [name]:
    out.update(_flat(get(stage).fingerprint(config)))
    version = getattr(get(stage), "VERSION", 1)
    if version != 1:
      out[f"code_version.{stage}"] = version
  return dict(sorted(out.items()))


def check_config(config) -> None:
  """Every check that can fail before any work: names, unknown keys and blocks, missing blocks,
  ranges, unbuilt stages."""
  choices.check(config)
  for stage in config.stages:  # a block a listed stage (or one it depends on) reads
    for reader in upstream(stage) + [stage]:
      absent = [b for b in get(reader).BLOCKS if b not in config]
      if absent:
        raise ConfigError(f"config: no {absent[0]!r} block, which the {reader} stage reads (stages "
                          f"{', '.join(config.stages)}); configs/paper.py makes every block, with the "
                          "paper's defaults: start a config file from it or from configs/default.py")
  order = [choices.STAGES.index(s) for s in config.stages]
  if order != sorted(order) or len(set(order)) != len(order):
    raise ConfigError(f"config stages={tuple(config.stages)}: list each stage once, in pipeline order "
                     f"{', '.join(choices.STAGES)}")
  if config.get("restart") and config.restart not in config.stages:
    raise ConfigError(f"config restart={config.restart!r}: not one of the stages this run runs "
                     f"({', '.join(config.stages)}); restart deletes a stage's outputs to run it again")
  known = set(GLOBAL_KEYS)
  for stage in implemented():
    known.update(get(stage).BLOCKS)
  unknown = sorted(set(config.keys()) - known)
  if unknown:
    raise ConfigError(f"config: unknown top-level key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                     f"valid keys: {', '.join(sorted(known))}")
  for stage in config.stages:
    check_processes(stage)  # a stage that runs in one process, in a multi-process run
    if hasattr(get(stage), "check_run"):  # what this run's processes allow, for the stages it runs
      get(stage).check_run(config)
  for stage in implemented():  # builds every block: unknown keys and bad values fail here, even
    if all(b in config for b in get(stage).BLOCKS):  # those of a stage a later run will list
      fingerprint(stage, config)
  check_paths(config)
  if "mesh" in config:  # its sizes (whether they fit the devices: when a stage makes it)
    parallel.check_shape(dict(config.mesh))


def check_paths(config) -> None:
  """Every input path the run's stages read exists; one error names each missing one."""
  missing = []
  source = config.data.source if "data" in config else ""
  if "data" in config.stages and config.data.path and not os.path.isdir(config.data.path):
    missing.append(f"data.path={config.data.path!r} (the {source} data directory) does not exist")
  if "align" in config.stages or ("data" in config.stages and source != "official"):
    try:
      assets.resolve_model_path(config.llm.model)
    except FileNotFoundError as e:
      missing.append(f"llm.model={config.llm.model!r}: {e}")
  if missing:
    raise ConfigError("config: missing input" + ("s" if len(missing) > 1 else "") + ":\n  " + "\n  ".join(missing))


def _how_to_proceed(name: str, workdir: str) -> str:
  later = choices.STAGES[choices.STAGES.index(name) + 1:]
  return (f"To proceed: use a fresh --workdir, or add --config.restart={name} to delete "
          f"{os.path.join(workdir, name)}" + (f" and the stages after it ({', '.join(later)})" if later else "")
          + " and run it again.")


STATES = ("absent", "started", "done")


def status(workdir: str, name: str, config) -> str:
  """'absent', 'started' or 'done' for stage `name`'s outputs made with this config.

  Raises StaleStateError, naming every differing key with its old and new value, when the
  outputs were made with other settings (or carry no fingerprint at all).
  """
  out = os.path.join(workdir, name)
  if not os.path.isdir(out) or not os.listdir(out) or getattr(get(name), "ALWAYS_RUN", False):
    return "absent"  # an ALWAYS_RUN stage (report) rewrites its outputs from its inputs every time
  path = os.path.join(out, FINGERPRINT)
  if not os.path.exists(path):
    raise StaleStateError(f"[{name}] {out} holds outputs without a {FINGERPRINT} (made by an older "
                          f"version or copied in); they cannot be checked against this config. "
                          + _how_to_proceed(name, workdir))
  stored, wanted = atomic.read_json(path), fingerprint(name, config)
  if stored != wanted:
    raise StaleStateError(f"[{name}] {out} was made with other settings; nothing was changed. "
                          "Differences (stored -> this config):\n"
                          + "\n".join(f"  {k}: {old} -> {new}" for k, old, new in workdir_lib.fingerprint_diff(stored, wanted))
                          + "\n" + _how_to_proceed(name, workdir))
  return "done" if os.path.exists(os.path.join(out, RESULT)) else "started"


def run(name: str, config, workdir: str, log=print) -> dict:
  """Runs (resumes, or reuses the finished outputs of) stage `name` for `config` in `workdir`."""
  for up in upstream(name):
    if status(workdir, up, config) != "done":
      raise StaleStateError(f"[{name}] needs the finished outputs of the {up} stage in "
                            f"{os.path.join(workdir, up)}; add {up!r} to config.stages")
  out = os.path.join(workdir, name)
  state = distributed.agree(status(workdir, name, config), STATES)  # process 0 decides for all
  if state == "done":
    log(f"[{name}] reusing {out}: finished with the same settings ({RESULT})")
    return atomic.read_json(os.path.join(out, RESULT))
  if state == "started":
    log(f"[{name}] resuming in {out} (same settings)")
  processes = check_processes(name)
  distributed.barrier(f"{name}-start")  # every process has read the status before process 0 writes
  if processes == "all":
    result = _run_and_record(name, config, workdir, log)
  elif distributed.is_main():  # alone: the others learn how it ended, failure included
    try:
      result = _run_and_record(name, config, workdir, log)
    except BaseException as e:
      distributed.tell_others(name, e)
      raise
    distributed.tell_others(name, None)
  else:
    print(f"[{name}] process {jax.process_index()} waits for process 0", file=sys.stderr, flush=True)
    distributed.wait_for_main(name)
    result = None
  distributed.barrier(f"{name}-done")  # the others wait for process 0's data, results and reports
  return result if result is not None else atomic.read_json(os.path.join(out, RESULT))


def _run_and_record(name: str, config, workdir: str, log) -> dict:
  """Stage `name`'s work with what it compiled; process 0 writes the fingerprint first, then
  result.json (and `finish`es)."""
  out = os.path.join(workdir, name)
  if distributed.is_main():
    os.makedirs(out, exist_ok=True)
    atomic.write_json(os.path.join(out, FINGERPRINT), fingerprint(name, config))
  with compile_stats.Collector() as compiled:  # what the stage compiled, from JAX's own events
    result = get(name).run(config, workdir, log=log)
  result = {**result, "compile": compiled.summary(), "code": provenance.code()}
  log(f"[{name}] {compiled.describe()}")
  with scalars.Scalars(scalars.logdir(out)) as curves:  # beside the training curves, for TensorBoard
    curves.write(0, compiled.summary(), prefix="compile/")
  if distributed.is_main():
    atomic.write_json(os.path.join(out, RESULT), result)
    if hasattr(get(name), "finish"):
      get(name).finish(config, workdir, log)
  return result


def restart(workdir: str, name: str, log=print) -> None:
  """Deletes the outputs of stage `name` and of every stage after it (what `config.restart` asks)."""
  for stage in choices.STAGES[choices.STAGES.index(name):]:
    out = os.path.join(workdir, stage)
    if os.path.lexists(out):
      log(f"[{stage}] restart={name}: deleting {out}")
      shutil.rmtree(out)
