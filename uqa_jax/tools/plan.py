"""Memory planner: what a training step needs on each device, found before anything is allocated.

  python -m uqa_jax.tools.plan --config configs/scale.py:1b --mesh data=2,fsdp=4 [--device_memory 80GiB]
  python -m uqa_jax.tools.plan --config configs/qwen.py:7b --stage align --llm qwen2.5-7b \
      --config.data.source=synthetic   # no weights and no data here: shapes only

For the Stage 1 (pretrain) or Stage 2 (align) step of a config it prints what
`uqa_jax.runtime.planner` measures: the parameter count, parameters and optimizer state per
device, the compiled step's memory per device, and the largest batch that fits.

`--device_memory` plans for a card you do not have. A mesh larger than this host's devices is
planned on that many simulated CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count`,
set before JAX starts): the figures are then the CPU compiler's, close to but not equal to an
accelerator's.

The align step is planned from the LLM's config.json (or `--llm`, a `llm.config.PRESETS` name,
when its weights are not on this machine): no weight is read. Its batch is planned at the full
`input.max_text_len` (the size every batch has unless `input.widths` cuts it); with
`--llm`, text that the config's tokenizer cannot give (its model is not here) is cut with the
default model's tokenizer, which changes no shape. Without a Stage 1 export in the workdir the
encoder is the config's, untrained (same shapes).
"""

import math
import os

from absl import app
from absl import flags
from absl import logging
import jax  # importing JAX reads no XLA_FLAGS yet: the first backend use does (main, below)
from ml_collections import config_flags

from uqa_jax import stages
from uqa_jax.encoders import export as encoder_export
from uqa_jax.llm import assets
from uqa_jax.llm import config as llm_config
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.llm import weights
from uqa_jax.runtime import planner
from uqa_jax.runtime import workdir as workdir_lib
from uqa_jax.soft_prompt import program as program_lib
from uqa_jax.stages import align
from uqa_jax.stages import pretrain


def _define_flags():
  """The CLI's flags; defined only when run as a program (tests import this module under their own flags)."""
  return dict(
      config=config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=False),
      mesh=flags.DEFINE_string("mesh", "", "axis=size pairs, e.g. data=2,fsdp=4 (default: the config's mesh)"),
      device_memory=flags.DEFINE_string("device_memory", "", "bytes per device, e.g. 80GiB (default: this host's)"),
      workdir=flags.DEFINE_string("workdir", None, "where the data stage's outputs are (default: as uqa_jax.main)"),
      stage=flags.DEFINE_enum("stage", "pretrain", ["pretrain", "align"], "which stage's training step"),
      llm=flags.DEFINE_string("llm", "", "align: plan for this architecture (a llm.config.PRESETS name, e.g. "
                              "qwen2.5-7b) instead of reading the config's llm.model"),
      search=flags.DEFINE_bool("search", True, "also find the largest batch that fits"))


_FLAGS = {}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _FLAGS['config'].value is None:
    raise app.UsageError("--config is required, e.g. --config configs/scale.py:1b")
  logging.set_verbosity(logging.WARNING)
  mesh = planner.parse_mesh(_FLAGS['mesh'].value) if _FLAGS['mesh'].value else None
  n = math.prod(mesh.values()) if mesh else 1
  if mesh and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # read when JAX first touches a backend (below), so a CPU host can plan an 8-device mesh
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
  config = _FLAGS['config'].value
  if mesh:
    config.mesh = mesh
  workdir = _FLAGS['workdir'].value or stages.default_workdir(flags.FLAGS["config"].config_filename)
  llm_cfg = None
  if _FLAGS['stage'].value == "align":
    llm_cfg, workdir = _llm_for_planning(config, _FLAGS['llm'].value, workdir)
  workdir = os.path.abspath(workdir)
  if stages.status(workdir, "data", config) != "done":
    print(f"plan: building the data set first (its vocabulary sizes shape the model): {workdir}/data")
    stages.run("data", config, workdir)
  devices = None
  if mesh:
    devices = jax.devices()
    if len(devices) < n:  # an accelerator host with fewer devices: plan on simulated CPU devices
      print(f"plan: this host has {len(devices)} {devices[0].platform} devices, the mesh needs {n}: planning "
            f"on {n} simulated CPU devices (the CPU compiler's figures; give --device_memory for the card)")
      devices = jax.devices("cpu")
    devices = devices[:n]
  parts = pretrain.build(config, workdir, devices=devices)
  target = parts.target() if llm_cfg is None else config_align_target(config, workdir, parts, llm_cfg, log=print)
  memory = planner.parse_memory(_FLAGS['device_memory'].value)
  p = planner.plan(target, memory, search=_FLAGS['search'].value, log=print)
  print("\n".join(p.lines()))
  if not p.fits:
    print(f"needs about {p.devices_needed()} devices with {planner.gib(p.device_memory)} each")


def _llm_for_planning(config, preset: str, workdir: str):
  """(the LLM's config, the workdir): `preset`'s architecture, or the config's model's config.json.
  A model that is not on this machine lends its tokenizer to no one: the data set is then built
  with the default model's tokenizer in `<workdir>-plan` (shapes only; see the module doc)."""
  if not preset:
    return weights.read_config(config.llm.model), workdir
  if preset not in llm_config.PRESETS:
    raise app.UsageError(f"--llm {preset!r}: unknown; expected one of {', '.join(llm_config.PRESETS)}")
  if not (config.llm.model == assets.DEFAULT_MODEL or os.path.exists(config.llm.model)):
    print(f"plan: llm.model {config.llm.model!r} is not on this machine: its text is cut with the "
          f"{assets.DEFAULT_MODEL} tokenizer (batches are padded to input.max_text_len, so no shape changes); "
          f"data set in {workdir}-plan")
    config.llm.model, workdir = assets.DEFAULT_MODEL, workdir + "-plan"
  return llm_config.PRESETS[preset], workdir


def config_align_target(config, workdir: str, parts, llm_cfg, log=None) -> planner.Target:
  """The align step of `config` with the LLM `llm_cfg` on Stage 1's mesh (`parts`:
  `pretrain.build`'s): the workdir's Stage 1 export when there is one, else the config's encoder
  untrained (same shapes). Nothing is read but the data set, the export and the tokenizer."""
  export = os.path.join(workdir, "pretrain", "export")
  encoder = encoder_export.load(export)[0] if os.path.isdir(export) else parts.model
  if log:
    log(f"plan: encoder {'from ' + export if os.path.isdir(export) else 'of the config (no Stage 1 export)'}; "
        f"LLM {llm_cfg.num_layers} layers x {llm_cfg.d_model}, stored {config.llm.param_dtype}, computing "
        f"{config.llm.dtype}{', remat' if config.llm.remat else ''}; align mode {config.align.mode}")
  prog = program_lib.program(config, program_lib.make_model(config, encoder, llm_cfg), parts.has_time, parts.mesh,
                             align.train_rows(workdir))
  tokenizer = tokenizer_lib.load_tokenizer(config.llm.model)
  return program_lib.plan_target(prog, align.make_pipeline(config), workdir_lib.data_dir(workdir), tokenizer)


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
