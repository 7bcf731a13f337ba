"""Batched decoding with a KV cache: left-padded prompts, optional soft-prompt prefix.

Shape letters as in `model.py`; P soft-prompt tokens, N new tokens, T prompt bucket.

Prompts are left-padded to a bucket length (a power of two from 16 to 64, then a multiple of
32: a 70-token prompt costs 96 slots, not 128), so prefill compiles once per bucket; the cache holds T + N slots and one jitted decode step serves every position
(the slot index is traced). A soft prompt `[B, P, D]` is placed right before each prompt's
tokens (the official code prepends it at position 0 of the sequence), or at `soft_at[b]`, an
index into row b's tokens. Greedy by default; `temperature > 0` samples, optionally with
nucleus (`top_p`) filtering.

`continuation_nll` scores given continuations of each prompt (e.g. an answer's candidates):
the prompt is prefilled once and each continuation runs on that cache, so C candidates cost
one prompt plus C short passes instead of C whole chats.
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.llm import model as model_lib
from uqa_jax.llm.config import LLMConfig

MIN_BUCKET = 16
BUCKET_STEP = 32  # above 2 * BUCKET_STEP, buckets grow by this much


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 32
  temperature: float = 0.0  # 0: greedy
  top_p: float = 1.0
  seed: int = 0


def bucket_length(n: int) -> int:
  if n > 2 * BUCKET_STEP:
    return -(-n // BUCKET_STEP) * BUCKET_STEP
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
    self._continue = jax.jit(self._continue_fn)

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

  def _continue_fn(self, params, last_logits_BxV, cache, prompt_mask_BxT, position_B, tokens_BxA, mask_BxA):
    """(summed NLL [B], token count [B]) of `tokens` (right-padded, `mask`) after the prompt."""
    t, a = prompt_mask_BxT.shape[1], tokens_BxA.shape[1]
    kv_mask_BxS = jnp.concatenate([prompt_mask_BxT, mask_BxA], axis=1)
    positions_BxA = position_B[:, None] + 1 + jnp.arange(a)[None, :]
    logits_BxAxV, _ = self.model.apply({"params": params}, tokens_BxA, positions=positions_BxA,
                                       kv_mask=kv_mask_BxS, cache=cache, slot=t)
    # Token j is predicted from the prompt's last position (j = 0) or from token j - 1.
    predictors_BxAxV = jnp.concatenate([last_logits_BxV[:, None], logits_BxAxV[:, :-1]], axis=1)
    logp_BxAxV = jax.nn.log_softmax(predictors_BxAxV.astype(jnp.float32), axis=-1)
    nll_BxA = -jnp.take_along_axis(logp_BxAxV, tokens_BxA[..., None], axis=-1)[..., 0]
    weights_BxA = mask_BxA.astype(jnp.float32)
    return jnp.sum(nll_BxA * weights_BxA, axis=1), jnp.sum(weights_BxA, axis=1)

  def _full_fn(self, params, embeds_BxSxD, kv_mask_BxS, last):
    positions = model_lib.positions_from_mask(kv_mask_BxS)
    logits, _ = self.model.apply({"params": params}, embeds=embeds_BxSxD, positions=positions,
                                 kv_mask=kv_mask_BxS)
    return logits[:, last]

  # --- host-side driver --------------------------------------------------------------
  def _prompt(self, prompts, soft_prompt_BxPxD, soft_at=None):
    """Left-padded embeddings [B, T, D] and mask [B, T] for token prompts (+ soft tokens).

    Row b's soft tokens go before its token `soft_at[b]` (default 0: before the first token).
    """
    p = 0 if soft_prompt_BxPxD is None else soft_prompt_BxPxD.shape[1]
    t = bucket_length(max(len(x) for x in prompts) + p)
    at = [0] * len(prompts) if soft_at is None else [int(a) for a in soft_at]
    if len(at) != len(prompts) or any(not 0 <= a <= len(x) for a, x in zip(at, prompts)):
      raise ValueError(f"soft_at must give one index in [0, len(prompt)] per prompt, got {soft_at}")
    ids = np.full((len(prompts), t), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), t), np.int32)
    soft = np.zeros((len(prompts), t, self.cfg.d_model), np.float32) if p else None
    is_soft = np.zeros((len(prompts), t, 1), bool)
    for b, x in enumerate(prompts):
      start = t - len(x) - p
      ids[b, start:start + at[b]] = x[:at[b]]
      ids[b, start + at[b] + p:] = x[at[b]:]
      mask[b, start:] = 1
      if p:
        soft[b, start + at[b]:start + at[b] + p] = soft_prompt_BxPxD[b]
        is_soft[b, start + at[b]:start + at[b] + p] = True
    embeds = self._embed(self.params, jnp.asarray(ids))
    if p:
      embeds = jnp.where(is_soft, jnp.asarray(soft, embeds.dtype), embeds)
    return embeds, jnp.asarray(mask)

  def prefill_seconds(self, prompts, soft_prompt_BxPxD=None, soft_at=None, new_tokens: int = 1,
                      warm: bool = True) -> float:
    """Wall time of one prefill of these prompts (`warm`: after a first call that compiles it;
    pass False when `generate` already ran this shape with `max_new_tokens = new_tokens`)."""
    embeds, mask = self._prompt(prompts, soft_prompt_BxPxD, soft_at)
    cache_len = mask.shape[1] + new_tokens
    if warm:
      jax.block_until_ready(self._prefill(self.params, embeds, mask, cache_len=cache_len))
    start = time.perf_counter()
    jax.block_until_ready(self._prefill(self.params, embeds, mask, cache_len=cache_len))
    return time.perf_counter() - start

  def continuation_nll(self, prompts: list[list[int]], continuations: list[list[list[int]]],
                       soft_prompt_BxPxD=None, soft_at=None, length: int = 0) -> list[list[tuple[float, int]]]:
    """Per prompt, per continuation: (summed NLL, token count) of the continuation after the prompt.

    Continuations are right-padded to `length`, or to the longest rounded up to a multiple of
    8, so few shapes serve every call with the same prompt bucket; a row with fewer continuations than the others
    gets (0.0, 0) for the missing ones.
    """
    if len(continuations) != len(prompts):
      raise ValueError(f"{len(continuations)} continuation lists for {len(prompts)} prompts")
    longest = max(len(c) for cs in continuations for c in cs)
    a = max(length, -(-longest // 8) * 8)
    if min((len(c) for cs in continuations for c in cs), default=1) < 1:
      raise ValueError("an empty continuation has no likelihood to compare")
    embeds, mask = self._prompt(prompts, soft_prompt_BxPxD, soft_at)
    last_logits, cache, position = self._prefill(self.params, embeds, mask, cache_len=mask.shape[1] + a)
    out = [[] for _ in prompts]
    for c in range(max(len(cs) for cs in continuations)):
      tokens = np.full((len(prompts), a), self.pad_id, np.int32)
      cmask = np.zeros((len(prompts), a), np.int32)
      for b, cs in enumerate(continuations):
        if c < len(cs):
          tokens[b, :len(cs[c])] = cs[c]
          cmask[b, :len(cs[c])] = 1
      nll, count = jax.device_get(self._continue(self.params, last_logits, cache, mask, position,
                                                 jnp.asarray(tokens), jnp.asarray(cmask)))
      for b, cs in enumerate(continuations):
        if c < len(cs):
          out[b].append((float(nll[b]), int(count[b])))
    return out

  def generate(self, prompts: list[list[int]], sampling: SamplingConfig = SamplingConfig(),
               soft_prompt_BxPxD=None, use_cache: bool = True, soft_at=None) -> list[list[int]]:
    """New tokens per prompt, up to (not including) the first end-of-sequence token."""
    if not prompts:
      return []
    if soft_prompt_BxPxD is not None and len(soft_prompt_BxPxD) != len(prompts):
      raise ValueError(f"soft prompt has batch {len(soft_prompt_BxPxD)}, prompts {len(prompts)}")
    embeds, mask = self._prompt(prompts, soft_prompt_BxPxD, soft_at)
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
