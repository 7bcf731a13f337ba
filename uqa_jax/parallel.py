"""Device mesh and the one table that maps logical axis names to mesh axes.

Parameters and activations are annotated with logical names (`embed`, `heads`, `mlp`, ...);
`RULES` maps each to a mesh axis (`data`, `fsdp`, `tensor`) or to None (replicated). The
same code then runs on 1 CPU, 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a multi-GPU host or a TPU slice.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or None = replicated). The one source of truth for sharding.
RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("items", "tensor"),
    ("feature_embed", None),
)


def make_mesh(shape: dict | None = None, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one entry may be -1 for "the rest of the devices"."""
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(shape or {"data": -1, "fsdp": 1, "tensor": 1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh: unknown axes {sorted(unknown)}; expected {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {shape}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {shape}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"found {len(devices)}")
  return Mesh(np.array(devices).reshape(sizes), MESH_AXES)


def logical_sharding(mesh: Mesh, logical_axes) -> NamedSharding:
  """The NamedSharding for one array annotated with logical axis names."""
  spec = nn.logical_to_mesh_axes(logical_axes, RULES)
  return NamedSharding(mesh, _fit(spec))


def _fit(spec):
  return PartitionSpec(*spec) if spec is not None else PartitionSpec()


def param_shardings(mesh: Mesh, abstract_params):
  """NamedShardings for a (possibly boxed, `nn.Partitioned`) parameter tree."""
  specs = nn.get_partition_spec(abstract_params)
  mesh_specs = nn.logical_to_mesh(specs, RULES)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), mesh_specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_params(params, shardings):
  """Places plain (unboxed) arrays with the given shardings."""
  return jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings)
