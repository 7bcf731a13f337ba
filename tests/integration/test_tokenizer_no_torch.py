"""The library's tokenizer path in a fresh process: it never imports torch."""


TEXTS = ["Hello world, 你好世界！ <|im_end|>", "  leading spaces\n\nand 12345 numbers",
         "It's the user's top 3 categories: A -> B -> C", "用户近期最感兴趣的类目是什么？"]


def test_library_tokenizer_path_does_not_import_torch():
  import subprocess, sys
  code = ("import sys; from uqa_jax.llm import tokenizer as t; t.load_tokenizer('smollm2'); "
          "import uqa_jax.data.pipeline, uqa_jax.stages.data; "
          "assert 'torch' not in sys.modules, 'torch imported'")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
