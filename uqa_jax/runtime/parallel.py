"""Device mesh and the one table that maps logical axis names to mesh axes.

Parameters and activations are annotated with logical names (`embed`, `heads`, `mlp`, ...);
`RULES` maps each to a mesh axis (`data`, `fsdp`, `tensor`) or to None (replicated). The
same code then runs on 1 CPU, 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a multi-GPU host or a TPU slice.
"""

import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from uqa_jax.runtime import errors

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (a tuple; () = replicated). The one source of truth for sharding,
# for parameters and activations alike; `config.sharding_rules` overrides entries (`rules`).
RULES = (
    # parameters (every parameter's axes are named: tests/unit/runtime/test_sharding_rules.py)
    ("layers", ()),  # the scanned layer stack (also "layers" on the LLM's stacked weights)
    ("vocab", ("tensor",)),  # LLM token rows; side-feature table rows
    ("items", ("fsdp", "tensor")),  # item-id table rows: sharded, the SL loss reads it in place
    ("feature_embed", ()),  # item-table widths (128 and below)
    ("embed", ("fsdp",)),  # model width
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("mlp", ("tensor",)),
    ("norm", ()),  # norm scales and biases over the width: small, replicated by rule
    ("positions", ()),  # learned positions and relative-position / time-bucket biases
    ("ssm", ()),  # Mamba's small dims: conv width, Δ rank, state size
    ("adapter", ()),  # every adapter parameter (~1M in all; a matrix's second axis: adapter_out): replicated
    ("adapter_out", ()),
    # activations
    ("batch", ("data", "fsdp")),
    ("act_length", ()),
    ("act_embed", ()),
    ("act_heads", ("tensor",)),
    ("act_kv_heads", ("tensor",)),  # the LLM's key/value heads (q/k/v and the KV cache)
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),  # the LLM's logits
    ("cache_length", ()),  # the KV cache's slots
)
LOGICAL_AXES = tuple(name for name, _ in RULES)


def rules(overrides=None) -> tuple:
  """RULES with `overrides` (config.sharding_rules: {name: mesh axes}) applied, in flax's form."""
  table = dict(RULES)
  for name, axes in dict(overrides or {}).items():
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if name not in table:
      raise ValueError(f"config sharding_rules.{name}: unknown logical axis; expected one of "
                       f"{', '.join(LOGICAL_AXES)}")
    unknown = [a for a in axes if a not in MESH_AXES]
    if unknown:
      raise ValueError(f"config sharding_rules.{name}={axes}: unknown mesh axes {unknown}; expected {MESH_AXES}")
    table[name] = axes
  return tuple((name, axes[0] if len(axes) == 1 else (axes or None)) for name, axes in table.items())


def config_rules(config) -> tuple:
  """The rules a run uses: RULES with the config's `sharding_rules` entries that differ."""
  block = config.get("sharding_rules")
  return rules(block.to_dict() if block is not None else None)


class Sharded:
  """`jax.jit(fn, **kw)` traced under the mesh and the logical-axis rules, so the models'
  activation constraints (`nn.with_logical_constraint`) take effect; call it or `.lower` it.

  `compile(*abstract_args, keep=True)` compiles ahead of time (the memory planner does, before
  anything is allocated) and keeps the executable: a later call whose arguments have the same
  shapes, dtypes and shardings runs it instead of compiling the same program again.
  """

  def __init__(self, fn, mesh: Mesh, axis_rules, **jit_kwargs):
    self._jit, self.mesh, self.rules = jax.jit(fn, **jit_kwargs), mesh, axis_rules
    self._compiled = {}

  def _context(self, traced=False):
    stack = contextlib.ExitStack()
    if not traced:  # inside another trace (eval_shape) the mesh cannot be set; shapes need no constraints
      stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def __call__(self, *args, **kwargs):
    if self._compiled and not kwargs:
      compiled = self._compiled.get(_signature(args))
      if compiled is not None:
        return compiled(*args)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
    with self._context(traced):
      return self._jit(*args, **kwargs)

  def lower(self, *args, **kwargs):
    with self._context():
      return self._jit.lower(*args, **kwargs)

  def compile(self, *args, keep: bool = True):
    compiled = self.lower(*args).compile()
    if keep:
      self._compiled[_signature(args)] = compiled
    return compiled


def _signature(args):
  """What an executable is specialised to: the tree, and each leaf's shape, dtype and sharding."""
  leaves, tree = jax.tree.flatten(args)
  return tree, tuple((tuple(x.shape), str(x.dtype), getattr(x, "sharding", None)) for x in leaves)


def shards(logical_name: str) -> int:
  """How many ways the current mesh and rules split the logical axis (1 outside `Sharded`)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = dict(nn.get_logical_axis_rules()).get(logical_name)
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(mesh.shape[a] for a in axes)


def constrain(x, logical_axes):
  """Pins an activation's sharding by logical names (a no-op outside `Sharded`: no mesh, no rules)."""
  return nn.with_logical_constraint(x, logical_axes)


class MeshError(errors.Refused, ValueError):
  """A `mesh` block that names unknown axes, impossible sizes, or does not fit the devices."""


def check_shape(shape: dict) -> list[int]:
  """The (data, fsdp, tensor) sizes of a `mesh` block, checked without devices: known axes, whole
  numbers >= 1, at most one -1 ("the rest of the devices")."""
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise MeshError(f"mesh: unknown axes {sorted(unknown)}; expected {MESH_AXES}")
  sizes = [shape.get(a, 1) for a in MESH_AXES]
  if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1) for s in sizes):
    raise MeshError(f"mesh {shape}: each axis is a whole number >= 1, or -1 for the rest of the devices")
  if sizes.count(-1) > 1:
    raise MeshError(f"mesh {shape}: at most one axis may be -1")
  return [int(s) for s in sizes]


def make_mesh(shape: dict | None = None, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one entry may be -1 for "the rest of the devices"."""
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(shape or {"data": -1, "fsdp": 1, "tensor": 1})
  sizes = check_shape(shape)
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise MeshError(f"mesh {shape}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                    f"found {len(devices)}")
  return Mesh(np.array(devices).reshape(sizes), MESH_AXES)


def logical_sharding(mesh: Mesh, logical_axes, axis_rules=None) -> NamedSharding:
  """The NamedSharding for one array annotated with logical axis names."""
  spec = nn.logical_to_mesh_axes(logical_axes, axis_rules or rules())
  return NamedSharding(mesh, _fit(spec))


def _fit(spec):
  return PartitionSpec(*spec) if spec is not None else PartitionSpec()


def param_shardings(mesh: Mesh, abstract_params, axis_rules=None):
  """NamedShardings for a (possibly boxed, `nn.Partitioned`) parameter tree; a parameter axis
  that its rule splits over more devices than its size divides by is an error naming both."""
  axis_rules = axis_rules or rules()
  specs = nn.get_partition_spec(abstract_params)
  mesh_specs = nn.logical_to_mesh(specs, axis_rules)
  is_box = lambda x: isinstance(x, nn.Partitioned)
  boxed = jax.tree_util.tree_flatten_with_path(abstract_params, is_leaf=is_box)[0]
  for (path, leaf), spec in zip(boxed, jax.tree.leaves(mesh_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))):
    if is_box(leaf):
      _check_divides(jax.tree_util.keystr(path), leaf.value.shape, leaf.names, spec, mesh)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), mesh_specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def _check_divides(where: str, shape, names, spec: PartitionSpec, mesh: Mesh) -> None:
  """Each axis's size must divide by the devices its mesh spec (what the rules gave) splits it over."""
  for size, name, axes in zip(shape, names, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(mesh.shape[a] for a in axes)
    if size % ways:
      raise ValueError(f"parameter {where}: its axis '{name}' has size {size}, which the rule {name} -> {axes} "
                       f"cannot split {ways} ways on mesh {dict(mesh.shape)}; replicate it "
                       f"(--config.sharding_rules.{name}='()') or use a mesh whose {'/'.join(axes)} size divides {size}")


def abstract(tree, shardings):
  """The shapes and dtypes of `tree`'s leaves (arrays or ShapeDtypeStructs) placed on `shardings`:
  what Orbax restores into and what the planner compiles on, nothing allocated."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def shard_params(params, shardings):
  """Places plain (unboxed) arrays with the given shardings. With several processes a host array
  must hold the same values on every process (each process places its devices' slices of it)."""
  def place(x, sharding):
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
      return jax.device_put(x, sharding)  # one process, or already a global array
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(place, params, shardings)
