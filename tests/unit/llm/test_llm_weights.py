"""Checkpoint loading errors name the file, the tensor and the shapes; GGUF loads SmolLM2."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy

from tests import llm_reference as ref
from uqa_jax.llm import config as config_lib
from uqa_jax.llm import weights


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  pytest.importorskip("torch")
  path = tmp_path_factory.mktemp("tiny")
  ref.tiny_checkpoint(str(path), "qwen2", tie=False)
  return path


def _copy_with(tiny_dir, tmp_path, edit):
  tensors = safetensors.numpy.load_file(str(tiny_dir / "model.safetensors"))
  edit(tensors)
  safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
  return str(tmp_path)


def test_directory_without_config_json(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    weights.load_hf(str(tmp_path))


def test_missing_tensor_is_named(tiny_dir, tmp_path):
  path = _copy_with(tiny_dir, tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(weights.CheckpointError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight' \(expected shape \(96, 64\)\)"):
    weights.load_hf(path)


def test_wrong_shape_names_tensor_expected_and_found(tiny_dir, tmp_path):
  def bad(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
  path = _copy_with(tiny_dir, tmp_path, bad)
  with pytest.raises(weights.CheckpointError,
                     match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), expected \(32, 64\)"):
    weights.load_hf(path)


def test_unsupported_architecture(tiny_dir, tmp_path):
  cfg = json.loads((tiny_dir / "config.json").read_text())
  cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="unsupported architecture.*MistralForCausalLM"):
    weights.load_hf(str(tmp_path))


def test_no_safetensors_is_an_error_not_a_pickle_load(tiny_dir, tmp_path):
  (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(weights.CheckpointError, match="no \\*.safetensors"):
    weights.load_hf(str(tmp_path))


def test_sharded_index_directory_loads(tiny_dir, tmp_path):
  tensors = safetensors.numpy.load_file(str(tiny_dir / "model.safetensors"))
  names = sorted(tensors)
  halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  for file, keys in halves.items():
    safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {k: f for f, ks in halves.items() for k in ks}}))
  (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
  _, a = weights.load_hf(str(tmp_path))
  _, b = weights.load_hf(str(tiny_dir))
  np.testing.assert_array_equal(a["layers"]["attn"]["q_kernel"], b["layers"]["attn"]["q_kernel"])


def test_presets_are_qwen25_sizes():
  p = config_lib.PRESETS["qwen2.5-0.5b"]
  assert (p.d_model, p.num_layers, p.num_heads, p.num_kv_heads, p.tie_embeddings) == (896, 24, 14, 2, True)
  assert config_lib.PRESETS["qwen2.5-7b"].vocab_size == 152_064


def test_unexpected_extra_tensor_is_named(tiny_dir, tmp_path):
  """An extra tensor means the checkpoint is not the graph we run: an error, never ignored."""
  def extra(t):
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, np.float32)
  path = _copy_with(tiny_dir, tmp_path, extra)
  with pytest.raises(weights.CheckpointError,
                     match=r"unexpected tensor 'model.layers.0.self_attn.rotary_emb.inv_freq'"):
    weights.load_hf(path)


def _tiny_gguf(path, extra_keys=(), tensors=("token_embd.weight",)):
  import gguf
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(1)
  w.add_embedding_length(8)
  w.add_feed_forward_length(16)
  w.add_head_count(2)
  w.add_head_count_kv(2)
  w.add_context_length(64)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(1e-5)
  w.add_vocab_size(4)
  for add, value in extra_keys:
    getattr(w, add)(value)
  for name in tensors:
    w.add_tensor(name, np.ones((4, 8) if name == "token_embd.weight" else (2,), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


@pytest.mark.parametrize("key,add,value", [
    ("llama.rope.scaling.type", "add_rope_scaling_type", "linear"),
    ("llama.attention.sliding_window", "add_sliding_window", 32),
    ("llama.rope.dimension_count", "add_rope_dimension_count", 2),
])
def test_gguf_metadata_we_do_not_implement_is_refused(tmp_path, key, add, value):
  import gguf
  if add == "add_rope_scaling_type":
    value = gguf.RopeScalingType.LINEAR
  path = _tiny_gguf(tmp_path / "m.gguf", [(add, value)])
  with pytest.raises(ValueError, match=f"key '{key}'"):
    weights.load_gguf(path)


def test_gguf_unmapped_tensor_is_named(tmp_path):
  """Llama-3.1 GGUFs carry their RoPE scaling as a `rope_freqs.weight` tensor."""
  path = _tiny_gguf(tmp_path / "m.gguf", tensors=("token_embd.weight", "rope_freqs.weight"))
  with pytest.raises(weights.CheckpointError, match="unexpected tensor 'rope_freqs.weight'"):
    weights.load_gguf(path)


@pytest.mark.parametrize("key,value", [
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}),
    ("use_sliding_window", True),
    ("partial_rotary_factor", 0.5),
])
def test_hf_config_keys_we_do_not_implement_are_refused_by_name(key, value):
  hf = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, key: value}
  with pytest.raises(ValueError, match=f"config.json: key '{key}'"):
    config_lib.from_hf_dict(hf)
  del hf[key]
  assert config_lib.from_hf_dict(hf).num_layers == 1  # the same config without it loads
