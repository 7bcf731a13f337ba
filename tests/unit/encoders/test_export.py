"""Encoder export/load: a round trip gives the same model and parameters; any mismatch names the tensor."""

import json
import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from uqa_jax.encoders import export
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.runtime import manifest

VOCAB = {"item": 50, "cate": 9, "brand": 9, "shop": 9, "seller": 9, "bpe": 30}
DIMS = {t: 4 for t in VOCAB}


def _saved(tmp_path, params_fn=lambda p: p, has_time=True, restamp=True):
  model = UserModel(EncoderConfig(name="hstu", d_model=8, num_layers=1, num_heads=2, max_len=16), VOCAB, DIMS)
  params = jax.device_get(flax.linen.unbox(jax.jit(
      lambda r: model.init({"params": r, "dropout": r}, export._example_batch(has_time)))(jax.random.PRNGKey(0))["params"]))
  export.save(str(tmp_path), model, params, has_time=has_time, extra={"metrics": {"recall@10": 0.5}})
  tampered = params_fn(flax.traverse_util.flatten_dict(params, sep="/"))
  if tampered is not None:  # overwrite the saved tensors with a changed tree
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(str(tmp_path / "params"), flax.traverse_util.unflatten_dict(tampered, sep="/"), force=True)
    checkpointer.wait_until_finished()
    if restamp:  # as if an export had been written with these tensors: its manifest matches them
      spec = json.loads((tmp_path / export.SPEC_FILE).read_text())
      spec["files"] = manifest.make(str(tmp_path / "params"))
      (tmp_path / export.SPEC_FILE).write_text(json.dumps(spec))
  return model, params


def test_tensors_changed_after_the_export_was_written_are_named_as_damaged_before_orbax_reads_them(tmp_path):
  _saved(tmp_path, params_fn=lambda p: {**p, "head/kernel": np.zeros((8, 5), np.float32)}, restamp=False)
  with pytest.raises(export.ExportError, match=r"params: damaged \(.*(changed since it was written|written with)"):
    export.load(str(tmp_path))


def test_round_trip_gives_the_same_model_and_parameters(tmp_path):
  model, params = _saved(tmp_path, params_fn=lambda p: None)
  loaded_model, loaded, spec = export.load(str(tmp_path))
  assert loaded_model.cfg == model.cfg and spec["metrics"] == {"recall@10": 0.5}
  flat_a = flax.traverse_util.flatten_dict(params, sep="/")
  flat_b = flax.traverse_util.flatten_dict(loaded, sep="/")
  assert flat_a.keys() == flat_b.keys() and any("time" in k for k in flat_a)  # the time bias came back
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_a_missing_tensor_is_an_error_naming_it(tmp_path):
  victim = "encoder/layers/rab"
  _saved(tmp_path, params_fn=lambda p: {k: v for k, v in p.items() if not k.startswith(victim)})
  with pytest.raises(export.ExportError, match=f"missing tensor {victim}"):
    export.load(str(tmp_path))


def test_an_unexpected_tensor_is_an_error_naming_it(tmp_path):
  _saved(tmp_path, params_fn=lambda p: {**p, "encoder/stray": np.zeros((3,), np.float32)})
  with pytest.raises(export.ExportError, match="unexpected tensor encoder/stray"):
    export.load(str(tmp_path))


def test_a_mis_shaped_tensor_is_an_error_naming_it(tmp_path):
  _saved(tmp_path, params_fn=lambda p: {**p, "head/kernel": np.zeros((8, 5), np.float32)})
  with pytest.raises(export.ExportError, match=r"tensor head/kernel: shape \(8, 5\)"):
    export.load(str(tmp_path))


def test_an_unknown_format_or_a_missing_spec_is_refused(tmp_path):
  _saved(tmp_path, params_fn=lambda p: None)
  spec_path = tmp_path / export.SPEC_FILE
  spec = json.loads(spec_path.read_text())
  spec_path.write_text(json.dumps({**spec, "format": 99}))
  with pytest.raises(export.ExportError, match="format 99"):
    export.load(str(tmp_path))
  os.remove(spec_path)
  with pytest.raises(export.ExportError, match="not an encoder export"):
    export.load(str(tmp_path))
