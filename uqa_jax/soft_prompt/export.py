"""Save and load an aligned model: what Stage 2 trained, for Stage 3 and for anyone who loads it.

`save` writes `align.json` (the adapter config, the align settings that define the model: mode,
user control, splice place, system prompt; the LLM source and dtype; the encoder export it
starts from; plus whatever the caller records) and `params/` (Orbax) holding only what differs
from the sources: the adapter always, the LLM after full fine-tuning, the encoder when it was
trained or is the `random_encoder` control. `load` rebuilds the `UQAModel` from the sources and
overlays the saved parameters, checking them tensor by tensor (missing, unexpected or
mis-shaped tensors are an `ExportError` naming them), as `encoders.export.load` does. The
sources are checked too: the LLM's token-embedding RMS must equal the adapter's `embed_rms`
(taken from that LLM at training time) and the encoder export's parameters the checksum saved
with the aligned model, so a replaced LLM directory or encoder export is an error, not a
silently different model.
"""

import json
import os
import shutil

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from uqa_jax import adapters
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.encoders import export as encoder_export
from uqa_jax.llm import model as llm_model
from uqa_jax.llm import sharded_load
from uqa_jax.llm import weights
from uqa_jax.runtime import atomic
from uqa_jax.runtime import disk
from uqa_jax.runtime import manifest
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.runtime import errors

SPEC_FILE = "align.json"
PARAMS_DIR = "params"
FORMAT = 1


class ExportError(errors.Refused, ValueError):
  """An align export that does not hold exactly the parameters its align.json describes."""


def checksum(tree) -> float:
  """Sum of squares of every parameter, in float64: what identifies a source's weights."""
  return float(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))


def embedding_rms(embedding_VxM) -> float:
  return float(np.sqrt(np.mean(np.square(np.asarray(embedding_VxM, np.float32)))))


def save(directory: str, spec: dict, saved_params: dict) -> None:
  """`spec`: JSON-able (see the module docstring); `saved_params`: {"adapter": ..., ["llm", "encoder"]},
  arrays as the run holds them (sharded ones are written shard by shard, never gathered: `load`
  restores them onto one device); with several processes every one calls it (Orbax saves
  collectively) and process 0 writes the spec."""
  directory = os.path.abspath(directory)
  disk.require(directory, disk.tree_bytes(saved_params), "align export")
  checkpointer = ocp.StandardCheckpointer()
  with disk.reported(directory, "align export", cleanup=lambda: shutil.rmtree(directory, ignore_errors=True)):
    checkpointer.save(os.path.join(directory, PARAMS_DIR), saved_params, force=True)
    checkpointer.wait_until_finished()
  if jax.process_index() != 0:
    return
  files = manifest.make(os.path.join(directory, PARAMS_DIR))
  atomic.write_text(os.path.join(directory, SPEC_FILE),
                    json.dumps({"format": FORMAT, "saved": sorted(saved_params), "files": files, **spec}, indent=2))


def _check(found, expected, where: str) -> None:
  found = flax.traverse_util.flatten_dict(found, sep="/")
  expected = flax.traverse_util.flatten_dict(expected, sep="/")
  problems = [f"missing tensor {k}" for k in expected if k not in found]
  problems += [f"unexpected tensor {k}" for k in found if k not in expected]
  problems += [f"tensor {k}: shape {np.shape(found[k])}, expected {tuple(v.shape)}"
               for k, v in expected.items() if k in found and np.shape(found[k]) != tuple(v.shape)]
  if problems:
    raise ExportError(f"{where}: " + "; ".join(problems))


def load_llm(spec: dict) -> tuple:
  """(config, params) of the LLM an export was aligned with, as the run stored it
  (`llm.param_dtype`), on this process's first device, loaded tensor by tensor
  (`sharded_load.load_onto`): host memory holds about one checkpoint tensor, not the model."""
  one_device = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.local_devices()[:1])
  return sharded_load.load_onto(spec["llm"]["model"], one_device, dtype=spec["llm"].get("param_dtype", "float32"))


def restore_params(path: str):
  """The saved parameters on this process's first device, whatever mesh saved them; damaged
  files are an ExportError naming `path`."""
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          checkpointer.metadata(path).item_metadata)
    return checkpointer.restore(path, target)
  except Exception as e:  # pylint: disable=broad-exception-caught (any read failure: the files are damaged)
    raise ExportError(f"{path}: cannot be read back ({type(e).__name__}: {errors.first_line(e)}); "
                      "the export is damaged: rerun its stage (--config.restart=align) or restore it") from e


def fine_tuned_llm(workdir: str, model: str, expected) -> dict:
  """The LLM parameters of `workdir`'s align export, on this process's first device, for
  `align.llm_from`: the export must hold a fine-tuned LLM made from `model` (the run's
  `llm.model`, absolute as exports store it) with the shapes of `expected`; anything else is an
  ExportError naming the workdir."""
  directory = os.path.abspath(os.path.join(workdir, "align", "export"))
  where = f"align.llm_from={workdir!r}: "
  spec = _read_spec(directory, where, "run that workdir's align stage first")
  if "llm" not in spec["saved"]:
    raise ExportError(f"{where}its Stage 2 did not fine-tune the LLM (mode {spec['align']['mode']!r}), so its LLM "
                      f"is {spec['llm']['model']} unchanged; use llm.model for that")
  if spec["llm"]["model"] != model:
    raise ExportError(f"{where}its LLM was fine-tuned from {spec['llm']['model']}, this run's llm.model is {model}")
  _check_files(directory, spec, where, "rerun that workdir's align stage or restore it")
  llm = restore_params(os.path.join(directory, PARAMS_DIR))["llm"]
  _check(llm, expected, f"{where}{directory}/{PARAMS_DIR}/llm")
  return llm


def _read_spec(directory: str, where: str, hint: str) -> dict:
  """`directory`'s align.json, of this version's format; errors start with `where`."""
  path = os.path.join(directory, SPEC_FILE)
  if not os.path.exists(path):
    raise ExportError(f"{where}{path} missing; {hint}")
  spec = atomic.read_json(path)
  if spec.get("format") != FORMAT:
    raise ExportError(f"{where}{path} has format {spec.get('format')!r}, this version reads format {FORMAT}")
  return spec


def _check_files(directory: str, spec: dict, where: str, hint: str) -> None:
  """The saved parameters' files against the spec's manifest (exports before it: unchecked)."""
  damaged = manifest.damaged(os.path.join(directory, PARAMS_DIR), spec.get("files", {}))
  if damaged:
    raise ExportError(f"{where}{directory}/{PARAMS_DIR}: {damaged}: {hint}")


def encoder_dir(directory: str, spec: dict) -> str:
  """The Stage 1 export an align export was made on: stored relative to it (`../../pretrain/export`,
  so a copied or moved workdir reads its own); an older export's absolute path is accepted only
  where it is that same place, never another workdir's."""
  stored = spec["encoder_export"]
  if not os.path.isabs(stored):
    return os.path.normpath(os.path.join(directory, stored))
  own = os.path.normpath(os.path.join(directory, os.pardir, os.pardir, "pretrain", "export"))
  if os.path.normpath(stored) != own:
    raise ExportError(f"{os.path.join(directory, SPEC_FILE)}: made on the encoder export {stored}, not on this "
                      f"workdir's {own} (a copied or moved workdir from before exports were relative); run the "
                      "align stage again here (--config.restart=align)")
  return own


def load(directory: str):
  """-> (UQAModel, params {"encoder", "adapter", "llm"}, spec)."""
  directory = os.path.abspath(directory)
  path = os.path.join(directory, SPEC_FILE)
  spec = _read_spec(directory, "", "the align stage writes one to workdir/align/export")
  encoder, encoder_params, _ = encoder_export.load(encoder_dir(directory, spec))
  rms = embedding_rms(weights.read_embedding(spec["llm"]["model"]))  # float32, as the run measured it
  if not np.isclose(rms, spec["adapter"]["embed_rms"], rtol=1e-6):
    raise ExportError(f"{path}: the LLM at {spec['llm']['model']} is not the one this model was aligned with "
                      f"(token-embedding RMS {rms:.6g}, aligned with {spec['adapter']['embed_rms']:.6g})")
  if "encoder" not in spec["saved"] and not np.isclose(checksum(encoder_params), spec["encoder_checksum"], rtol=1e-9):
    raise ExportError(f"{path}: the encoder export {spec['encoder_export']} holds other weights than the "
                      "ones this model was aligned with")
  # stored as the run stored it (a bfloat16-stored frozen LLM is rounded the same way here)
  llm_cfg, llm_params = load_llm(spec)
  param_dtype = spec["llm"].get("param_dtype", "float32")  # exports before the field: float32
  llm = llm_model.Decoder(llm_cfg.replace(dtype=spec["llm"]["dtype"], param_dtype=param_dtype))
  adapter_cfg = AdapterConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["adapter"].items()})
  adapter = adapters.get(adapter_cfg.name)(adapter_cfg)
  a = spec["align"]
  model = uqa_model.UQAModel(encoder, adapter, llm, place=a["place"], user=a["user"])
  _check_files(directory, spec, "", "rerun its stage (--config.restart=align) or restore it")
  saved = restore_params(os.path.join(directory, PARAMS_DIR))
  if sorted(saved) != spec["saved"]:
    raise ExportError(f"{directory}: params hold {sorted(saved)}, {SPEC_FILE} says {spec['saved']}")
  shapes = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
  d = model.adapter_width
  expected = {"encoder": shapes(encoder_params), "llm": shapes(llm_params),
              "adapter": nn.unbox(jax.eval_shape(lambda r: adapter.init(r, jnp.zeros((1, 2, d)), jnp.ones((1, 2), jnp.int32)),
                                                 keys.abstract())["params"])}
  for name, tree in saved.items():
    _check(tree, expected[name], f"{directory}/{PARAMS_DIR}/{name}")
  return model, {"encoder": encoder_params, "llm": llm_params, **saved}, spec
