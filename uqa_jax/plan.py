"""Memory planner: what a training step needs on each device, found before anything is allocated.

  python -m uqa_jax.plan --config configs/scale.py:1b --mesh data=2,fsdp=4 [--device_memory 80GiB]
  python -m uqa_jax.plan --config configs/qwen.py:7b --stage align --llm qwen2.5-7b \
      --config.data.source=synthetic   # no weights and no data here: shapes only

For the Stage 1 (pretrain) or Stage 2 (align) step of a config it prints the parameter count,
the bytes of parameters and optimizer state each device holds (from the shardings
`parallel.RULES` gives; for align also the frozen groups: the LLM in adapter mode), the per-device
memory of the ahead-of-time compiled step (`jit(...).lower(...).compile().memory_analysis()`:
arguments + outputs - donated + temporaries; nothing runs), and the largest batch that fits
the device memory. The step's memory is measured at the config's batch and at twice it, the
largest batch is the linear estimate from those two, rounded down to a multiple of the
batch-sharding devices and then checked by compiling it (and stepped down until it fits).

Device memory: the accelerator's `bytes_limit`; on CPU the host's available memory shared by
the CPU devices (simulated ones share one host). `--device_memory` plans for a card you do not
have. A mesh larger than this host's devices is planned on that many simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count`, set before JAX starts): the figures are
then the CPU compiler's, close to but not equal to an accelerator's.

The align step is planned from the LLM's config.json (or `--llm`, a `llm.config.PRESETS` name,
when its weights are not on this machine): no weight is read. Its batch is planned at the full
`input.max_text_len` (the size every batch has unless `input.pad_multiple` cuts it); with
`--llm`, text that the config's tokenizer cannot give (its model is not here) is cut with the
default model's tokenizer, which changes no shape. Without a Stage 1 export in the workdir the
encoder is the config's, untrained (same shapes).

`check(target)` is what Stages 1 and 2 call before they allocate: a step that cannot fit stops
the run with `DoesNotFit`, the figures and the device count it would need.
"""

import dataclasses
import math
import os
import re
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax  # importing JAX reads no XLA_FLAGS yet: the first backend use does (main, below)
import psutil
from ml_collections import config_flags

from uqa_jax import parallel

GiB = 1 << 30


class DoesNotFit(RuntimeError):
  """The step's per-device memory exceeds the devices'; the message has the planner's figures."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """Per-device bytes of one compiled step (XLA's memory analysis)."""
  batch_size: int
  arguments: int
  outputs: int
  aliased: int  # outputs written into donated arguments
  temporaries: int

  @property
  def peak(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries


@dataclasses.dataclass(frozen=True)
class Target:
  """A training step to plan: its compiled function and abstract arguments (nothing allocated)."""
  name: str  # pretrain | align
  step: Any  # parallel.Sharded: (state, *fixed, batch) -> ...
  state: Any  # the trained state's ShapeDtypeStructs, with shardings
  fixed: tuple  # further arguments before the batch (align: the frozen groups), abstract
  example: Any  # one batch's shapes and dtypes (any batch size)
  batch_shardings: Any
  mesh: Any
  batch_size: int
  hints: tuple = ()  # what else would shrink the step, for DoesNotFit

  def args(self, batch_size: int) -> tuple:
    batch = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype, sharding=s),
                         self.example, self.batch_shardings)
    return (self.state, *self.fixed, batch)


def pretrain_target(parts) -> Target:
  """Stage 1's step (`pretrain.build`'s parts)."""
  return Target("pretrain", parts.step, abstract_state(parts), (), parts.example, parts.batch_shardings,
                parts.mesh, parts.cfg.batch_size,
                () if parts.model.cfg.remat else ("--config.encoder.remat=True",))


def align_target(prog, pipe, data_dir: str, tokenizer, mesh) -> Target:
  """Stage 2's step (`align.program`), its batch as the align-train file gives it at the full
  text length (`pipe` with `pad_multiple` off)."""
  from uqa_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from uqa_jax.data import schema  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(pipe, shuffle=False, pad_multiple=0)
  batch = next(iter(pipeline.make_dataset(os.path.join(data_dir, schema.file_name("align", "train")), cfg,
                                          tokenizer=tokenizer)))
  example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  llm = prog.model.llm.cfg
  hints = () if llm.remat else ("--config.llm.remat=True",)
  hints += () if llm.param_dtype == "bfloat16" or "llm" in prog.trainable else ("--config.llm.param_dtype=bfloat16",)
  return Target("align", prog.step, prog.abstract_state(), (prog.abstract_frozen(),), example,
                jax.tree.map(lambda _: prog.batch_sharding, example), mesh, pipe.batch_size, hints)


def _target(x) -> Target:
  return x if isinstance(x, Target) else pretrain_target(x)


@dataclasses.dataclass(frozen=True)
class Plan:
  name: str
  mesh: dict
  platform: str
  parameters: int  # trained and frozen
  state_bytes: int  # parameters (trained and frozen) + optimizer state held by one device
  step: StepMemory  # at the config's batch
  device_memory: int | None
  max_batch: int | None  # None: not searched; 0: not even the smallest batch fits

  @property
  def fits(self) -> bool:
    return self.device_memory is None or self.step.peak <= self.device_memory

  def devices_needed(self) -> int:
    """Devices of this memory the step would need if its memory divided evenly over them."""
    n = math.prod(self.mesh.values())
    need = math.ceil(self.step.peak * n / self.device_memory)
    return 1 << max(0, need - 1).bit_length()  # the next power of two

  def lines(self) -> list[str]:
    s = self.step
    out = [f"{self.name} step, mesh {self.mesh} ({self.platform}), {self.parameters:,} parameters",
           f"per device: parameters + optimizer state {_gib(self.state_bytes)}; step at batch {s.batch_size}: "
           f"{_gib(s.peak)} (arguments {_gib(s.arguments)}, outputs {_gib(s.outputs)}, donated "
           f"{_gib(s.aliased)}, temporaries {_gib(s.temporaries)})"]
    if self.device_memory is not None:
      out.append(f"device memory {_gib(self.device_memory)}: the step {'fits' if self.fits else 'does NOT fit'}")
    if self.max_batch is not None:
      out.append("largest batch that fits: " + (str(self.max_batch) if self.max_batch else
                                                 "none (not even the smallest batch)"))
    return out


def _gib(n: int) -> str:
  """Bytes as GiB, or MiB below a GiB (a small budget must not read as 0.00 GiB)."""
  return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB"


def parse_memory(text: str) -> int | None:
  """'80GiB', '16G', '512MiB', '1.5e9' -> bytes; '' -> None (what the device reports)."""
  if not text:
    return None
  m = re.fullmatch(r"\s*([0-9.eE+]+)\s*(|[KMGT]i?B?|B)\s*", text)
  if not m:
    raise ValueError(f"memory {text!r}: expected a number with an optional unit (e.g. 80GiB, 512MiB)")
  unit = m.group(2).upper().rstrip("B").rstrip("I")
  return int(float(m.group(1)) * (1 << (10 * " KMGT".index(unit or " "))))


def parse_mesh(text: str) -> dict:
  """'data=2,fsdp=4' -> {'data': 2, 'fsdp': 4, 'tensor': 1}."""
  shape = {a: 1 for a in parallel.MESH_AXES}
  for part in filter(None, text.split(",")):
    name, _, size = part.partition("=")
    if name not in shape or not size.isdigit() or int(size) < 1:
      raise ValueError(f"--mesh {text!r}: expected axis=size pairs (sizes >= 1) over {parallel.MESH_AXES}, "
                       f"e.g. data=2,fsdp=4")
    shape[name] = int(size)
  return shape


def device_memory(device) -> int:
  """Bytes one device may use: the accelerator's limit, or the host's available memory per CPU device."""
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  return psutil.virtual_memory().available // len(jax.local_devices(backend=device.platform))


def step_memory(target, batch_size: int, keep: bool = False) -> StepMemory:
  """The compiled step's per-device memory at `batch_size` (lowered on shapes only); `target`: a
  `Target` or Stage 1's parts; `keep`: the step keeps the executable, so the run's first step
  does not compile it again."""
  t = _target(target)
  m = t.step.compile(*t.args(batch_size), keep=keep).memory_analysis()
  return StepMemory(batch_size, m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                    m.temp_size_in_bytes)


def abstract_state(parts):
  """Stage 1's TrainState: shapes, dtypes and shardings."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      jax.eval_shape(parts.init, jax.random.PRNGKey(0)), parts.state_shardings)


def state_bytes_per_device(state) -> int:
  """Bytes of the largest shard of each leaf of an abstract sharded state, summed."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))


def plan(target, memory: int | None = None, search: bool = False, log=None) -> Plan:
  """The plan of a step (`Target`, or Stage 1's parts); `search`: also the largest batch."""
  t = _target(target)
  step = step_memory(t, t.batch_size, keep=True)
  device = next(d for d in t.mesh.devices.flat if d.process_index == jax.process_index())  # one of ours
  memory = device_memory(device) if memory is None else memory
  max_batch = _largest_batch(t, step, memory, log) if search else None
  held = (t.state.params, *t.fixed)
  return Plan(name=t.name, mesh=dict(t.mesh.shape), platform=device.platform,
              parameters=sum(math.prod(x.shape) for x in jax.tree.leaves(held)),
              state_bytes=state_bytes_per_device((t.state, *t.fixed)), step=step, device_memory=memory,
              max_batch=max_batch)


def _largest_batch(t: Target, step: StepMemory, memory: int, log, tries: int = 6) -> int:
  """Secant search on the compiled peak: each new batch is where the line through the last two
  measured batches meets the memory; stops within 5% of the memory or after `tries` compiles."""
  unit = t.mesh.shape["data"] * t.mesh.shape["fsdp"]  # a batch splits evenly over these
  points = [(step.batch_size, step.peak)]
  batch = 2 * step.batch_size
  for _ in range(tries):
    peak = step_memory(t, batch).peak
    if log:
      log(f"plan: batch {batch}: {_gib(peak)} per device")
    points.append((batch, peak))
    if 0.95 * memory <= peak <= memory:
      break
    (b1, p1), (b2, p2) = points[-2], points[-1]
    slope = (p2 - p1) / (b2 - b1) if p2 > p1 and b2 != b1 else None
    if slope is None:  # no growth measured between the two: try a batch far larger
      nxt = 4 * max(b1, b2)
    else:
      nxt = int(b2 + (0.98 * memory - p2) / slope) // unit * unit
    if nxt < unit or nxt in (b for b, _ in points):
      break
    batch = nxt
  fitting = [b for b, p in points if p <= memory]
  return max(fitting, default=0)


def check(target, log=print, memory: int | None = None) -> Plan:
  """A stage's check before it allocates: DoesNotFit (with the figures) when the step cannot fit."""
  t = _target(target)
  p = plan(t, memory)
  if not p.fits:
    raise DoesNotFit(f"the {t.name} training step does not fit the devices; nothing was allocated.\n  " +
                     "\n  ".join(p.lines()) +
                     f"\n  it would need about {p.devices_needed()} devices with {_gib(p.device_memory)} each "
                     f"(e.g. --config.mesh.fsdp={p.devices_needed()}), or a smaller batch"
                     + "".join(f", or {h}" for h in t.hints)
                     + "; python -m uqa_jax.plan --config ... --mesh ... --device_memory ... plans another machine")
  log(f"plan: {t.name} step needs {_gib(p.step.peak)} per device of {_gib(p.device_memory)} "
      f"(parameters + optimizer state {_gib(p.state_bytes)})")
  return p


def _define_flags():
  """The CLI's flags; defined only when run as a program (Stage 1 imports this module under main's flags)."""
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
  mesh = parse_mesh(_FLAGS['mesh'].value) if _FLAGS['mesh'].value else None
  n = math.prod(mesh.values()) if mesh else 1
  if mesh and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # read when JAX first touches a backend (below), so a CPU host can plan an 8-device mesh
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
  from uqa_jax import stages  # pylint: disable=import-outside-toplevel
  from uqa_jax.stages import pretrain  # pylint: disable=import-outside-toplevel
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
  target = parts if llm_cfg is None else config_align_target(config, workdir, parts, llm_cfg, log=print)
  memory = parse_memory(_FLAGS['device_memory'].value)
  p = plan(target, memory, search=_FLAGS['search'].value, log=print)
  print("\n".join(p.lines()))
  if not p.fits:
    print(f"needs about {p.devices_needed()} devices with {_gib(p.device_memory)} each")


def _llm_for_planning(config, preset: str, workdir: str):
  """(the LLM's config, the workdir): `preset`'s architecture, or the config's model's config.json.
  A model that is not on this machine lends its tokenizer to no one: the data set is then built
  with the default model's tokenizer in `<workdir>-plan` (shapes only; see the module doc)."""
  from uqa_jax.llm import assets  # pylint: disable=import-outside-toplevel
  from uqa_jax.llm import config as llm_config  # pylint: disable=import-outside-toplevel
  from uqa_jax.llm import weights  # pylint: disable=import-outside-toplevel
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


def config_align_target(config, workdir: str, parts, llm_cfg, log=None) -> Target:
  """The align step of `config` with the LLM `llm_cfg` on Stage 1's mesh (`parts`:
  `pretrain.build`'s): the workdir's Stage 1 export when there is one, else the config's encoder
  untrained (same shapes). Nothing is read but the data set, the export and the tokenizer."""
  from uqa_jax.encoders import export as encoder_export  # pylint: disable=import-outside-toplevel
  from uqa_jax.llm import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from uqa_jax.stages import align  # pylint: disable=import-outside-toplevel
  from uqa_jax.stages import data as data_stage  # pylint: disable=import-outside-toplevel
  export = os.path.join(workdir, "pretrain", "export")
  encoder = encoder_export.load(export)[0] if os.path.isdir(export) else parts.model
  if log:
    log(f"plan: encoder {'from ' + export if os.path.isdir(export) else 'of the config (no Stage 1 export)'}; "
        f"LLM {llm_cfg.num_layers} layers x {llm_cfg.d_model}, stored {config.llm.param_dtype}, computing "
        f"{config.llm.dtype}{', remat' if config.llm.remat else ''}; align mode {config.align.mode}")
  prog = align.program(config, align.make_model(config, encoder, llm_cfg), parts.has_time, parts.mesh,
                       align.train_rows(workdir))
  tokenizer = tokenizer_lib.load_tokenizer(config.llm.model)
  return align_target(prog, align.make_pipeline(config), data_stage.data_dir(workdir), tokenizer, parts.mesh)


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
