"""Batched decoding with a KV cache: left-padded prompts, optional soft-prompt prefix.

Shape letters as in `model.py`; P soft-prompt tokens, N new tokens, T prompt bucket.

Prompts are left-padded to a bucket length (a power of two >= 16), so prefill compiles once
per bucket; the cache holds T + N slots and one jitted decode step serves every position
(the slot index is traced). A soft prompt `[B, P, D]` is placed right before each prompt's
tokens (the official code prepends it at position 0 of the sequence). Greedy by default;
`temperature > 0` samples, optionally with nucleus (`top_p`) filtering.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.llm import model as model_lib
from uqa_jax.llm.config import LLMConfig

MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 32
  temperature: float = 0.0  # 0: greedy
  top_p: float = 1.0
  seed: int = 0


def bucket_length(n: int) -> int:
  return max(MIN_BUCKET, 1 << (max(n, 1) - 1).bit_length())


def _sample(logits_BxV, key, temperature, top_p):
  if temperature <= 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits = logits_BxV / temperature
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    drop_sorted = cum - jax.nn.softmax(sorted_logits, axis=-1) >= top_p  # smallest set reaching top_p
    drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
    logits = jnp.where(drop, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class Generator:
  """Jitted prefill + decode for one model; reuse it across calls to reuse compilations."""

  def __init__(self, cfg: LLMConfig, params, *, eos_ids, pad_id: int = 0):
    self.cfg = cfg
    self.params = params
    self.model = model_lib.Decoder(cfg)
    self.eos_ids = tuple(sorted(set(int(e) for e in eos_ids)))
    self.pad_id = int(pad_id)
    self._embed = jax.jit(lambda p, ids: self.model.apply({"params": p}, ids, method="embed"))
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("cache_len",))
    self._step = jax.jit(self._step_fn, donate_argnames=("cache",))
    self._full = jax.jit(self._full_fn)

  # --- jitted pieces -----------------------------------------------------------------
  def _prefill_fn(self, params, embeds_BxTxD, mask_BxT, cache_len):
    b, t = mask_BxT.shape
    cache = model_lib.init_cache(self.cfg, b, cache_len)
    kv_mask_BxS = jnp.pad(mask_BxT, ((0, 0), (0, cache_len - t)), constant_values=1)
    positions_BxT = model_lib.positions_from_mask(mask_BxT)
    logits, cache = self.model.apply({"params": params}, embeds=embeds_BxTxD, positions=positions_BxT,
                                     kv_mask=kv_mask_BxS, cache=cache, slot=0, last_only=True)
    return logits[:, -1], cache, positions_BxT[:, -1]

  def _step_fn(self, params, token_B, position_B, slot, cache, kv_mask_BxS):
    logits, cache = self.model.apply({"params": params}, token_B[:, None], positions=position_B[:, None],
                                     kv_mask=kv_mask_BxS, cache=cache, slot=slot)
    return logits[:, 0], cache

  def _full_fn(self, params, embeds_BxSxD, kv_mask_BxS, last):
    positions = model_lib.positions_from_mask(kv_mask_BxS)
    logits, _ = self.model.apply({"params": params}, embeds=embeds_BxSxD, positions=positions,
                                 kv_mask=kv_mask_BxS)
    return logits[:, last]

  # --- host-side driver --------------------------------------------------------------
  def _prompt(self, prompts, soft_prompt_BxPxD):
    """Left-padded embeddings [B, T, D] and mask [B, T] for token prompts (+ soft prefix)."""
    p = 0 if soft_prompt_BxPxD is None else soft_prompt_BxPxD.shape[1]
    t = bucket_length(max(len(x) for x in prompts) + p)
    ids = np.full((len(prompts), t), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), t), np.int32)
    for b, x in enumerate(prompts):
      if len(x):
        ids[b, t - len(x):] = x
      mask[b, t - len(x) - p:] = 1
    embeds = self._embed(self.params, jnp.asarray(ids))
    if p:
      soft = np.zeros(embeds.shape, np.float32)
      is_soft = np.zeros((len(prompts), t, 1), bool)
      for b, x in enumerate(prompts):
        soft[b, t - len(x) - p: t - len(x)] = soft_prompt_BxPxD[b]
        is_soft[b, t - len(x) - p: t - len(x)] = True
      embeds = jnp.where(is_soft, jnp.asarray(soft, embeds.dtype), embeds)
    return embeds, jnp.asarray(mask)

  def generate(self, prompts: list[list[int]], sampling: SamplingConfig = SamplingConfig(),
               soft_prompt_BxPxD=None, use_cache: bool = True) -> list[list[int]]:
    """New tokens per prompt, up to (not including) the first end-of-sequence token."""
    if not prompts:
      return []
    if soft_prompt_BxPxD is not None and len(soft_prompt_BxPxD) != len(prompts):
      raise ValueError(f"soft prompt has batch {len(soft_prompt_BxPxD)}, prompts {len(prompts)}")
    embeds, mask = self._prompt(prompts, soft_prompt_BxPxD)
    b, t = mask.shape
    n = sampling.max_new_tokens
    key = jax.random.PRNGKey(sampling.seed)
    eos = jnp.asarray(self.eos_ids or (-1,))
    out = np.full((b, n), self.pad_id, np.int32)
    done = np.zeros(b, bool)
    if use_cache:
      logits, cache, position = self._prefill(self.params, embeds, mask, cache_len=t + n)
      kv_mask = jnp.pad(mask, ((0, 0), (0, n)), constant_values=1)
    else:
      buffer = jnp.pad(embeds, ((0, 0), (0, n), (0, 0)))
      kv_mask = jnp.pad(mask, ((0, 0), (0, n)))
      logits = self._full(self.params, buffer, kv_mask, t - 1)
    for step in range(n):
      key, sub = jax.random.split(key)
      token = _sample(logits, sub, sampling.temperature, sampling.top_p)
      token_np = np.asarray(token)
      out[:, step] = np.where(done, self.pad_id, token_np)
      done |= np.isin(token_np, np.asarray(eos))
      if done.all() or step == n - 1:
        break
      if use_cache:
        position = position + 1
        logits, cache = self._step(self.params, token, position, jnp.int32(t + step), cache, kv_mask)
      else:
        new = self._embed(self.params, token[:, None])
        buffer = buffer.at[:, t + step].set(new[:, 0])
        kv_mask = kv_mask.at[:, t + step].set(1)
        logits = self._full(self.params, buffer, kv_mask, t + step)
    results = []
    for row in out:
      stop = next((i for i, x in enumerate(row) if x in self.eos_ids), len(row))
      results.append(row[:stop].tolist())
    return results


def eos_ids_for(cfg: LLMConfig, tokenizer) -> tuple[int, ...]:
  """End-of-sequence ids: the checkpoint's, the tokenizer's, and the chat end markers it has."""
  ids = set(cfg.eos_token_ids)
  if tokenizer.eos_token_id is not None:
    ids.add(tokenizer.eos_token_id)
  vocab = tokenizer.get_vocab()
  ids.update(vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>") if t in vocab)
  return tuple(sorted(ids))


@functools.lru_cache(maxsize=2)
def load_generator(model: str):
  """(Generator, tokenizer) for `smollm2`, a .gguf file or a HF directory."""
  from uqa_jax.llm import tokenizer as tokenizer_lib
  from uqa_jax.llm import weights
  cfg, params = weights.load(model)
  tok = tokenizer_lib.load_tokenizer(model)
  params = jax.tree.map(jnp.asarray, params)
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  return Generator(cfg, params, eos_ids=eos_ids_for(cfg, tok), pad_id=pad), tok
