"""Save and load a trained user model: one pair, one format, used by every stage after Stage 1.

`save` writes `encoder.json` (all that rebuilds the model: the EncoderConfig, vocab sizes,
embedding widths, whether it was trained with click times; plus whatever the caller records,
e.g. the retrieval metrics) and `params/` (Orbax). `load` rebuilds the model
from `encoder.json`, restores the parameters and compares them tensor by tensor with the ones
the model declares: a missing, unexpected or mis-shaped tensor is an `ExportError` naming it.
(The official code loads its encoder with `strict=False`, which would leave a missing tensor
at its random initialisation without a word.)
"""

import dataclasses
import json
import os
import shutil

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from uqa_jax.data import schema
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.runtime import atomic
from uqa_jax.runtime import disk
from uqa_jax.runtime import manifest
from uqa_jax.runtime import keys
from uqa_jax.runtime import errors

SPEC_FILE = "encoder.json"
PARAMS_DIR = "params"
FORMAT = 1


class ExportError(errors.Refused, ValueError):
  """An export directory that does not hold exactly the model its encoder.json describes."""


def _example_batch(has_time: bool, length: int = 4) -> dict:
  """The smallest batch `UserModel.init` accepts; parameter shapes do not depend on B, L or K."""
  batch = {c: np.zeros((1, length, 1), np.int32) for c in schema.FEATURE_COLUMNS[1:]}
  batch[schema.ITEM_COLUMN] = np.zeros((1, length), np.int32)
  batch["lengths"] = np.ones((1,), np.int32)
  if has_time:
    batch["timestamps"] = np.zeros((1, length), np.int32)
  return batch


def expected_params(model: UserModel, has_time: bool):
  """ShapeDtypeStructs of every parameter `model` declares (no computation)."""
  init = lambda rng: model.init({"params": rng, "dropout": rng}, _example_batch(has_time))["params"]
  return flax.linen.unbox(jax.eval_shape(init, keys.abstract()))


def save(directory: str, model: UserModel, params, *, has_time: bool, extra: dict | None = None) -> None:
  directory = os.path.abspath(directory)  # Orbax refuses relative paths
  disk.require(directory, disk.tree_bytes(params), "encoder export")
  checkpointer = ocp.StandardCheckpointer()
  with disk.reported(directory, "encoder export", cleanup=lambda: shutil.rmtree(directory, ignore_errors=True)):
    checkpointer.save(os.path.join(directory, PARAMS_DIR), jax.device_get(params), force=True)  # every process
    checkpointer.wait_until_finished()
  if jax.process_index() != 0:  # the spec is written once
    return
  spec = {"format": FORMAT, "encoder": dataclasses.asdict(model.cfg),
          "vocab_sizes": dict(model.vocab_sizes), "embed_dims": dict(model.embed_dims),
          "has_time": has_time, "files": manifest.make(os.path.join(directory, PARAMS_DIR)), **(extra or {})}
  atomic.write_text(os.path.join(directory, SPEC_FILE), json.dumps(spec, indent=2))


def read_spec(directory: str) -> dict:
  path = os.path.join(directory, SPEC_FILE)
  if not os.path.exists(path):
    raise ExportError(f"{path}: missing; {directory} is not an encoder export "
                      "(the pretrain stage writes one to workdir/pretrain/export)")
  spec = atomic.read_json(path)
  if spec.get("format") != FORMAT:
    raise ExportError(f"{path}: format {spec.get('format')!r}, this version reads format {FORMAT}")
  return spec


def load(directory: str):
  """-> (UserModel, params, spec); every parameter the model declares was found, nothing else."""
  directory = os.path.abspath(directory)
  spec = read_spec(directory)
  fields = {f.name for f in dataclasses.fields(EncoderConfig)}
  unknown = sorted(set(spec["encoder"]) - fields)
  if unknown:
    raise ExportError(f"{os.path.join(directory, SPEC_FILE)}: encoder fields {unknown} unknown to this version")
  cfg = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["encoder"].items()})
  model = UserModel(cfg, spec["vocab_sizes"], spec["embed_dims"])
  params_dir = os.path.join(directory, PARAMS_DIR)
  if not os.path.isdir(params_dir):
    raise ExportError(f"{params_dir}: missing")
  damaged = manifest.damaged(params_dir, spec.get("files", {}))  # exports before the manifest: unchecked
  if damaged:
    raise ExportError(f"{params_dir}: {damaged}: rerun its stage (--config.restart=pretrain) or restore it")
  checkpointer = ocp.StandardCheckpointer()
  try:
    params = checkpointer.restore(params_dir)
  except Exception as e:  # pylint: disable=broad-exception-caught (any read failure: the files are damaged)
    raise ExportError(f"{params_dir}: cannot be read back ({type(e).__name__}: {errors.first_line(e)}); "
                      "the export is damaged: rerun its stage (--config.restart=pretrain) or restore it") from e
  finally:
    checkpointer.close()
  expected = flax.traverse_util.flatten_dict(expected_params(model, spec["has_time"]), sep="/")
  found = flax.traverse_util.flatten_dict(params, sep="/")
  problems = [f"missing tensor {k} {tuple(v.shape)}" for k, v in expected.items() if k not in found]
  problems += [f"unexpected tensor {k} {tuple(np.shape(v))}" for k, v in found.items() if k not in expected]
  problems += [f"tensor {k}: shape {tuple(np.shape(found[k]))} dtype {np.asarray(found[k]).dtype}, "
               f"expected {tuple(v.shape)} {v.dtype}"
               for k, v in expected.items()
               if k in found and (np.shape(found[k]) != tuple(v.shape) or np.asarray(found[k]).dtype != v.dtype)]
  if problems:
    raise ExportError(f"{params_dir} does not match the {cfg.name} model of {SPEC_FILE}: " + "; ".join(problems))
  return model, params, spec
