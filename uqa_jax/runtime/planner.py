"""Memory planner (library half): what a training step needs on each device, found before anything
is allocated. The command line is `uqa_jax/tools/plan.py` (`python -m uqa_jax.tools.plan`).

For a step (`Target`: its compiled function and abstract arguments) it gives the parameter count,
the bytes of parameters and optimizer state each device holds (from the shardings the rules give;
for align also the frozen groups: the LLM in adapter mode), the per-device memory of the
ahead-of-time compiled step (`jit(...).lower(...).compile().memory_analysis()`: arguments +
outputs - donated + temporaries; nothing runs), and the largest batch that fits the device
memory. The step's memory is measured at the config's batch and at twice it, the largest batch
is the linear estimate from those two, rounded down to a multiple of the batch-sharding devices
and then checked by compiling it (and stepped down until it fits).

Device memory: the accelerator's `bytes_limit`; on CPU the host's available memory shared by
the CPU devices (simulated ones share one host).

`check(target)` is what Stages 1 and 2 call before they allocate: a step that cannot fit stops
the run with `DoesNotFit`, the figures and the device count it would need.
"""


import dataclasses
import math
import re
from typing import Any

import jax
import psutil

from uqa_jax.runtime import parallel
from uqa_jax.runtime import errors

GiB = 1 << 30


class DoesNotFit(errors.Refused, RuntimeError):
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
           f"per device: parameters + optimizer state {gib(self.state_bytes)}; step at batch {s.batch_size}: "
           f"{gib(s.peak)} (arguments {gib(s.arguments)}, outputs {gib(s.outputs)}, donated "
           f"{gib(s.aliased)}, temporaries {gib(s.temporaries)})"]
    if self.device_memory is not None:
      out.append(f"device memory {gib(self.device_memory)}: the step {'fits' if self.fits else 'does NOT fit'}")
    if self.max_batch is not None:
      out.append("largest batch that fits: " + (str(self.max_batch) if self.max_batch else
                                                 "none (not even the smallest batch)"))
    return out


def gib(n: int) -> str:
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


def step_memory(target: Target, batch_size: int, keep: bool = False) -> StepMemory:
  """The compiled step's per-device memory at `batch_size` (lowered on shapes only); `keep`: the
  step keeps the executable, so the run's first step does not compile it again."""
  m = target.step.compile(*target.args(batch_size), keep=keep).memory_analysis()
  return StepMemory(batch_size, m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                    m.temp_size_in_bytes)


def state_bytes_per_device(state) -> int:
  """Bytes of the largest shard of each leaf of an abstract sharded state, summed."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))


def plan(t: Target, memory: int | None = None, search: bool = False, log=None) -> Plan:
  """The plan of a step; `search`: also the largest batch."""
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
      log(f"plan: batch {batch}: {gib(peak)} per device")
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


def check(t: Target, log=print, memory: int | None = None) -> Plan:
  """A stage's check before it allocates: DoesNotFit (with the figures) when the step cannot fit."""
  p = plan(t, memory)
  if not p.fits:
    raise DoesNotFit(f"the {t.name} training step does not fit the devices; nothing was allocated.\n  " +
                     "\n  ".join(p.lines()) +
                     f"\n  it would need about {p.devices_needed()} devices with {gib(p.device_memory)} each "
                     f"(e.g. --config.mesh.fsdp={p.devices_needed()}), or a smaller batch"
                     + "".join(f", or {h}" for h in t.hints)
                     + "; python -m uqa_jax.tools.plan --config ... --mesh ... --device_memory ... plans another machine")
  log(f"plan: {t.name} step needs {gib(p.step.peak)} per device of {gib(p.device_memory)} "
      f"(parameters + optimizer state {gib(p.state_bytes)})")
  return p
