"""LLM weights loaded straight into their shardings, one checkpoint tensor at a time.

`weights.load` builds the whole float32 parameter tree on the host (about 28 GB for a 7B model)
before anything is placed. `load_sharded(path, shardings)` instead makes each parameter device
shard by device shard: for a shard it reads the layer tensors it needs one at a time
(safetensors memory maps, `weights.TENSORS` for names and layouts), converts each to our layout,
keeps only the device's slice and copies it to the device before the next shard. Host memory
then peaks near one checkpoint tensor plus two device shards of one parameter, whatever the
model's size; every tensor is still checked by name and shape, and the values equal
`weights.load`'s (tested on a (1,2,4) mesh, with the peak measured).
Hugging Face directories only (a GGUF file is quantised whole; `weights.load` reads those).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.llm import assets
from uqa_jax.llm import config as config_lib
from uqa_jax.llm import model as llm_model
from uqa_jax.llm import weights
from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel


def decoder_shardings(cfg: LLMConfig, mesh, axis_rules=None):
  """The decoder's parameter shardings on `mesh` under the rules (from shapes only)."""
  abstract = jax.eval_shape(lambda r: llm_model.init_params(cfg, r), keys.abstract())
  return parallel.param_shardings(mesh, abstract, axis_rules)


def load_onto(model: str, mesh, axis_rules=None, dtype="float32", shardings=None) -> tuple[LLMConfig, dict]:
  """`weights.load(model)` stored as `dtype` and placed on `mesh` by the rules (or `shardings`,
  when the caller has them): a Hugging Face directory shard by shard (`load_sharded`); a GGUF
  file (dequantised whole) on the host first."""
  path = assets.resolve_model_path(model)
  if os.path.isdir(path):
    cfg = config_lib.from_hf_dir(path)
    return load_sharded(path, shardings or decoder_shardings(cfg, mesh, axis_rules), dtype)
  cfg, params = weights.load(model)
  params = jax.tree.map(lambda x: np.asarray(x, jnp.dtype(dtype)), params)
  return cfg, parallel.shard_params(params, shardings or decoder_shardings(cfg, mesh, axis_rules))


def _our_shape(cfg: LLMConfig, name: str, layout: str, heads, shapes) -> tuple[int, ...]:
  hf = next(v for k, v in shapes.items() if k == name.format(i=0))
  n = getattr(cfg, heads) if heads else None
  return weights.LAYOUTS[layout][0](np.empty(hf, np.bool_), cfg, n).shape


def load_sharded(path: str, shardings, dtype="float32") -> tuple[LLMConfig, dict]:
  """(config, params as jax.Arrays with `shardings`) from a Hugging Face directory.

  `shardings` is a tree shaped like the parameters (e.g. `parallel.param_shardings` of the
  decoder's boxed init); `dtype` the stored parameter dtype (float32 or bfloat16): each shard is
  converted from the checkpoint's dtype (float32, bfloat16 or float16) as it is cut.
  """
  dtype = jnp.dtype(dtype)
  cfg = config_lib.from_hf_dir(path)
  read = weights.SafetensorsReader(path, framework="numpy")  # host arrays, one tensor at a time
  shapes = weights.expected_shapes(cfg)
  missing = sorted(set(shapes) - set(read.weight_map))
  if missing:
    raise weights.CheckpointError(f"{path}: missing tensor {missing[0]!r} (expected shape {shapes[missing[0]]})"
                                  + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
  weights._refuse_extra(sorted(set(read.weight_map) - set(shapes)), path,  # pylint: disable=protected-access
                        "the model has no such parameter")
  params = {}
  for name, where, layout, heads, when in weights.TENSORS:
    if not weights._present(cfg, when):  # pylint: disable=protected-access
      continue
    to_ours = weights.LAYOUTS[layout][0]
    n = getattr(cfg, heads) if heads else None
    stacked = "{i}" in name
    one = _our_shape(cfg, name, layout, heads, shapes)
    shape = (cfg.num_layers, *one) if stacked else one

    def tensor(full, to_ours=to_ours, n=n):
      w = read(full)
      if tuple(w.shape) != shapes[full]:
        raise weights.CheckpointError(f"{path}: tensor {full!r} has shape {tuple(w.shape)}, expected {shapes[full]}")
      return to_ours(w, cfg, n)

    def shard(index, name=name, stacked=stacked, tensor=tensor):
      # np.array copies: a view of the slice would keep the whole checkpoint tensor alive
      if not stacked:
        return np.array(tensor(name)[index], dtype)
      layers = range(cfg.num_layers)[index[0]]
      return np.stack([np.array(tensor(name.format(i=i))[index[1:]], dtype) for i in layers])

    sharding = weights._get(shardings, where)  # pylint: disable=protected-access
    weights._set(params, where, _place(shape, sharding, shard))  # pylint: disable=protected-access
  return cfg, params


def _place(shape, sharding, shard_fn):
  """A global array built shard by shard: each device's piece is made, copied to its device and
  dropped before the next (`make_array_from_callback` would hold every host piece at once)."""
  pieces = []
  for device, index in sharding.addressable_devices_indices_map(shape).items():
    pieces.append(jax.device_put(shard_fn(index), device, may_alias=False).block_until_ready())
  return jax.make_array_from_single_device_arrays(shape, sharding, pieces)
