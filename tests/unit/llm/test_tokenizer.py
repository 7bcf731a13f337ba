"""The GGUF tokenizer we build without torch equals transformers' own GGUF path (which uses torch)."""

import os

import pytest

from uqa_jax.llm import assets
from uqa_jax.llm import tokenizer as tokenizer_lib

TEXTS = ["Hello world, 你好世界！ <|im_end|>", "  leading spaces\n\nand 12345 numbers",
         "It's the user's top 3 categories: A -> B -> C", "用户近期最感兴趣的类目是什么？"]


def test_gguf_tokenizer_matches_transformers_gguf_loader(tokenizer):
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  path = assets.smollm2_gguf_path()
  ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
  assert len(tokenizer) == len(ref) == 49_152
  for text in TEXTS:
    assert tokenizer(text).input_ids == ref(text).input_ids, text
    assert tokenizer.decode(tokenizer(text).input_ids) == ref.decode(ref(text).input_ids)
  chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
  assert (tokenizer.apply_chat_template(chat, tokenize=False)
          == ref.apply_chat_template(chat, tokenize=False))
  assert tokenizer.eos_token == ref.eos_token == "<|im_end|>"


def test_unknown_model_path_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="no such file or directory"):
    tokenizer_lib.load_tokenizer("/nonexistent/model")


def test_hugging_face_directory_goes_through_autotokenizer(tokenizer, tmp_path):
  tokenizer.save_pretrained(str(tmp_path))
  tokenizer_lib.load_tokenizer.cache_clear()
  from_dir = tokenizer_lib.load_tokenizer(str(tmp_path))
  for text in TEXTS:
    assert from_dir(text).input_ids == tokenizer(text).input_ids
  assert from_dir.chat_template == tokenizer.chat_template
