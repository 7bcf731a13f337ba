"""Batched decoding with a KV cache: left-padded prompts, optional soft-prompt prefix.

Shape letters as in `model.py`; P soft-prompt tokens, N new tokens, T prompt bucket, A answer
(continuation) slots, S cache slots.

Compiled once per shape, by design (`Shapes`): prompts are left-padded to one of a few length
buckets, the KV cache always has S = the largest bucket + max(N, A) slots, and the slot a call
writes at is traced. So a generator compiles one prefill per bucket (token embedding and the
soft-prompt splice inside it; prompts with and without soft tokens trace apart), one decode loop
(greedy or sampled, `lax.while_loop` until every row ended or N tokens) and one continuation
scorer per answer bucket, per batch size, whatever the prompts. Decoding and scoring attend over
all S slots, so short prompts that share a generator with long ones pay for the long ones' cache.
`Shapes.fit(lengths, count)` chooses the buckets from the prompt lengths a caller will ask
(the least padding with at most `count` buckets); without fixed shapes each call gets the
bucket `bucket_length` gives it and a cache of its own length (one-off use: `llm.chat`, tests).

A soft prompt `[B, P, D]` is placed right before each prompt's tokens (the official code
prepends it at position 0 of the sequence), or at `soft_at[b]`, an index into row b's tokens.
Greedy by default; `temperature > 0` samples, optionally with nucleus (`top_p`) filtering.

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
FIT_MULTIPLE = 8  # buckets chosen by `Shapes.fit` are multiples of this
OWN_BUCKET_SLACK = 1.5  # `prefill_seconds(own_bucket=True)`: a fixed bucket at most this times a prompt's own


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


def fit_buckets(lengths, count: int, multiple: int = FIT_MULTIPLE) -> tuple[int, ...]:
  """At most `count` bucket lengths (multiples of `multiple`, the largest holding the longest
  prompt) that minimise the padded tokens of `lengths`, each prompt in the smallest that holds it."""
  if count < 1:
    raise ValueError(f"fit_buckets: count={count}; expected at least 1")
  rounded = np.asarray([-(-max(int(n), 1) // multiple) * multiple for n in lengths], np.int64)
  if not len(rounded):
    raise ValueError("fit_buckets: no prompt lengths to fit buckets to")
  sizes, counts = np.unique(rounded, return_counts=True)
  k = len(sizes)
  # best[c][j]: least padded tokens for sizes[..j] in at most c buckets, the last one sizes[j];
  # prev[c][j]: the top of the bucket before it (-1: none).
  below = np.concatenate([[0], np.cumsum(counts)])
  best = [[0] * k for _ in range(count + 1)]
  prev = [[-1] * k for _ in range(count + 1)]
  for c in range(1, count + 1):
    for j in range(k):
      best[c][j] = int(sizes[j] * below[j + 1])
      for i in range(j if c > 1 else 0):
        cost = best[c - 1][i] + int(sizes[j] * (below[j + 1] - below[i + 1]))
        if cost < best[c][j]:
          best[c][j], prev[c][j] = cost, i
  out, c, j = [], count, k - 1
  while j >= 0:
    out.append(int(sizes[j]))
    j, c = prev[c][j], c - 1
  return tuple(sorted(out))


def _smallest(buckets, n: int, what: str) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f"{what} of {n} tokens is longer than the largest bucket {max(buckets, default=0)} "
                   f"(buckets {tuple(buckets)}); fit the buckets to everything the generator will be asked")


def _check_buckets(name: str, buckets, allow_empty: bool = False) -> None:
  if (not buckets and not allow_empty) or list(buckets) != sorted(set(buckets)) or (buckets and buckets[0] < 1):
    raise ValueError(f"Shapes: {name}={buckets}; expected distinct positive lengths, ascending")


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The fixed shapes of a generator's executables: prompt buckets, new tokens, answer buckets
  (the continuation slots `continuation_nll` scores candidates in)."""
  buckets: tuple[int, ...]
  new_tokens: int
  answer_buckets: tuple[int, ...] = ()

  def __post_init__(self):
    _check_buckets("buckets", self.buckets)
    _check_buckets("answer_buckets", self.answer_buckets, allow_empty=True)

  @property
  def answer_len(self) -> int:
    return max(self.answer_buckets, default=0)

  @property
  def cache_len(self) -> int:
    return self.buckets[-1] + max(self.new_tokens, self.answer_len)

  def bucket(self, n: int) -> int:
    return _smallest(self.buckets, n, "a prompt")

  def answer_slots(self, n: int) -> int:
    return _smallest(self.answer_buckets, n, "a continuation")

  @classmethod
  def fit(cls, lengths, count: int, new_tokens: int, answer_lengths=(), answer_count: int = 2) -> "Shapes":
    """Prompt buckets fitted to `lengths`, answer buckets to `answer_lengths` (each the longest
    continuation a batch scores), at most `count` / `answer_count` of each."""
    answers = fit_buckets(answer_lengths, answer_count) if len(answer_lengths) else ()
    return cls(fit_buckets(lengths, count), new_tokens, answers)


@dataclasses.dataclass
class Prefilled:
  """A prefilled batch: last logits [B, V], cache, last positions [B], key mask [B, S], bucket T."""
  logits_BxV: jax.Array
  cache: dict
  position_B: jax.Array
  kv_mask_BxS: jax.Array
  bucket: int
  new_tokens: int
  answer_len: int


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


def _longest(prompts, soft_prompt_BxPxD) -> int:
  """The longest prompt's length with its soft tokens: what its bucket must hold."""
  return max(len(x) for x in prompts) + (0 if soft_prompt_BxPxD is None else soft_prompt_BxPxD.shape[1])


class Generator:
  """Jitted prefill, decode loop and continuation scorer for one model; reuse it across calls
  to reuse their executables (with fixed `shapes`, one of each per bucket / batch size)."""

  def __init__(self, cfg: LLMConfig, params, *, eos_ids, pad_id: int = 0, shapes: Shapes | None = None):
    self.cfg = cfg
    self.params = params
    self.model = model_lib.Decoder(cfg)
    self.eos_ids = tuple(sorted(set(int(e) for e in eos_ids)))
    self.pad_id = int(pad_id)
    self.shapes = shapes
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("cache_len",))
    self._decode = jax.jit(self._decode_fn, static_argnames=("new_tokens", "temperature", "top_p"))
    self._continue = jax.jit(self._continue_fn)
    self._full = jax.jit(self._full_fn)
    self._embed = jax.jit(lambda p, ids: self.model.apply({"params": p}, ids, method="embed"))

  # --- jitted pieces -----------------------------------------------------------------
  def _embeds(self, params, ids_BxT, soft_BxPxD, soft_start_B):
    """Token embeddings [B, T, D] with each row's P soft tokens written from `soft_start[b]`."""
    embeds = self.model.apply({"params": params}, ids_BxT, method="embed")
    if soft_BxPxD is None:
      return embeds
    p = soft_BxPxD.shape[1]
    rows_Bx1 = jnp.arange(ids_BxT.shape[0])[:, None]
    return embeds.at[rows_Bx1, soft_start_B[:, None] + jnp.arange(p)[None]].set(soft_BxPxD.astype(embeds.dtype))

  def _prefill_fn(self, params, ids_BxT, mask_BxT, soft_BxPxD, soft_start_B, cache_len):
    b, t = mask_BxT.shape
    cache = model_lib.init_cache(self.cfg, b, cache_len)
    positions_BxT = model_lib.positions_from_mask(mask_BxT)
    embeds = self._embeds(params, ids_BxT, soft_BxPxD, soft_start_B)
    kv_mask_BxS = jnp.pad(mask_BxT, ((0, 0), (0, cache_len - t)))  # slots past the prompt: not yet written
    logits, cache = self.model.apply({"params": params}, embeds=embeds, positions=positions_BxT,
                                     kv_mask=kv_mask_BxS, cache=cache, slot=0, last_only=True)
    return logits[:, -1], cache, positions_BxT[:, -1], kv_mask_BxS

  def _decode_fn(self, params, logits_BxV, cache, position_B, kv_mask_BxS, slot, seed, eos_E,
                 new_tokens, temperature, top_p):
    """Up to N new tokens [B, N] (pad after a row's end) from a prefilled cache, in one loop."""
    b, s = kv_mask_BxS.shape
    kv_mask_BxS = jnp.where(jnp.arange(s)[None] >= slot, 1, kv_mask_BxS)  # decoded slots (causal: seen once written)

    def unfinished(carry):
      step, _, done_B, *_ = carry
      return (step < new_tokens) & ~jnp.all(done_B)

    def one_token(carry):
      step, out_BxN, done_B, logits, cache, position, key = carry
      key, sub = jax.random.split(key)
      token_B = _sample(logits, sub, temperature, top_p)
      out_BxN = out_BxN.at[:, step].set(jnp.where(done_B, self.pad_id, token_B))
      done_B = done_B | jnp.isin(token_B, eos_E)
      position = position + 1
      logits, cache = self.model.apply({"params": params}, token_B[:, None], positions=position[:, None],
                                       kv_mask=kv_mask_BxS, cache=cache, slot=slot + step)
      return step + 1, out_BxN, done_B, logits[:, 0], cache, position, key

    out_BxN = jnp.full((b, new_tokens), self.pad_id, jnp.int32)
    carry = (jnp.int32(0), out_BxN, jnp.zeros(b, bool), logits_BxV, cache, position_B, jax.random.PRNGKey(seed))
    return jax.lax.while_loop(unfinished, one_token, carry)[1]

  def _continue_fn(self, params, last_logits_BxV, cache, kv_mask_BxS, position_B, slot, tokens_BxA, mask_BxA):
    """(summed NLL [B], token count [B]) of `tokens` (right-padded, `mask`) after the prompt."""
    a = tokens_BxA.shape[1]
    kv_mask_BxS = jax.lax.dynamic_update_slice(kv_mask_BxS, mask_BxA.astype(kv_mask_BxS.dtype), (0, slot))
    positions_BxA = position_B[:, None] + 1 + jnp.arange(a)[None, :]
    logits_BxAxV, _ = self.model.apply({"params": params}, tokens_BxA, positions=positions_BxA,
                                       kv_mask=kv_mask_BxS, cache=cache, slot=slot)
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
  def _shapes(self, longest: int, new_tokens: int, answer_len: int = 0, fixed: bool = True) -> Shapes:
    """The fixed shapes (checked to hold this call), or (none fixed, or not `fixed`) this call's own."""
    if self.shapes is None or not fixed:
      return Shapes((bucket_length(longest),), new_tokens, (answer_len,) if answer_len else ())
    if new_tokens > self.shapes.new_tokens or answer_len > self.shapes.answer_len:
      raise ValueError(f"{new_tokens} new tokens and {answer_len} answer slots asked; this generator's fixed "
                       f"shapes hold {self.shapes.new_tokens} and {self.shapes.answer_len}")
    return self.shapes

  def _inputs(self, prompts, soft_prompt_BxPxD, soft_at, bucket: int):
    """Left-padded ids [B, T], mask [B, T], soft tokens [B, P, D] or None and where they start [B].

    Row b's soft tokens go before its token `soft_at[b]` (default 0: before the first token).
    """
    p = 0 if soft_prompt_BxPxD is None else soft_prompt_BxPxD.shape[1]
    at = [0] * len(prompts) if soft_at is None else [int(a) for a in soft_at]
    if len(at) != len(prompts) or any(not 0 <= a <= len(x) for a, x in zip(at, prompts)):
      raise ValueError(f"soft_at must give one index in [0, len(prompt)] per prompt, got {soft_at}")
    ids = np.full((len(prompts), bucket), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), bucket), np.int32)
    start_B = np.zeros(len(prompts), np.int32)
    for b, x in enumerate(prompts):
      start = bucket - len(x) - p
      ids[b, start:start + at[b]] = x[:at[b]]
      ids[b, start + at[b] + p:] = x[at[b]:]
      mask[b, start:] = 1
      start_B[b] = start + at[b]
    soft = None if not p else np.asarray(soft_prompt_BxPxD, np.float32)
    return ids, mask, soft, start_B

  def _prefill_args(self, prompts, soft_prompt_BxPxD, soft_at, new_tokens, answer_len, fixed=True):
    """(shapes, bucket, device inputs of `_prefill`); `fixed=False`: this call's own shapes."""
    if soft_prompt_BxPxD is not None and len(soft_prompt_BxPxD) != len(prompts):
      raise ValueError(f"soft prompt has batch {len(soft_prompt_BxPxD)}, prompts {len(prompts)}")
    longest = _longest(prompts, soft_prompt_BxPxD)
    shapes = self._shapes(longest, new_tokens, answer_len, fixed)
    bucket = shapes.bucket(longest)
    return shapes, bucket, self._inputs(prompts, soft_prompt_BxPxD, soft_at, bucket)

  def prefill(self, prompts, soft_prompt_BxPxD=None, soft_at=None, new_tokens: int = 1,
              answer_len: int = 0) -> Prefilled:
    """The prompts (+ soft tokens) prefilled into a cache with room for `new_tokens` / `answer_len`."""
    shapes, bucket, inputs = self._prefill_args(prompts, soft_prompt_BxPxD, soft_at, new_tokens, answer_len)
    logits, cache, position, kv_mask = self._prefill(self.params, *inputs, cache_len=shapes.cache_len)
    return Prefilled(logits, cache, position, kv_mask, bucket, shapes.new_tokens, shapes.answer_len)

  def prefill_seconds(self, prompts, soft_prompt_BxPxD=None, soft_at=None, own_bucket: bool = False) -> float:
    """Wall time of one prefill of these prompts on the device (host assembly excluded).

    The generator's prefill executable is timed when a fixed bucket holds them (its first call
    compiles it, later calls reuse it) — with `own_bucket`, only when that bucket is at most
    `OWN_BUCKET_SLACK` times their own (`bucket_length`), so a prompt is never timed at a much
    longer prompt's bucket (text20's at text50's). Otherwise a prefill at their own bucket is
    compiled ahead of time for this measurement alone and timed once.
    """
    longest = _longest(prompts, soft_prompt_BxPxD)
    fixed = (self.shapes is not None and longest <= self.shapes.buckets[-1]
             and (not own_bucket or self.shapes.bucket(longest) <= OWN_BUCKET_SLACK * bucket_length(longest)))
    shapes, _, inputs = self._prefill_args(prompts, soft_prompt_BxPxD, soft_at, 0, 0, fixed=fixed)
    inputs = jax.device_put(inputs)
    if fixed:
      run = lambda: self._prefill(self.params, *inputs, cache_len=shapes.cache_len)
      jax.block_until_ready(run())
    else:
      compiled = self._prefill.lower(self.params, *inputs, cache_len=shapes.cache_len).compile()
      run = lambda: compiled(self.params, *inputs)
    start = time.perf_counter()
    jax.block_until_ready(run())
    return time.perf_counter() - start

  def decode(self, state: Prefilled, sampling: SamplingConfig = SamplingConfig()) -> np.ndarray:
    """[B, N] new tokens (N = the shapes' new tokens; pad after a row's end)."""
    if sampling.max_new_tokens > state.new_tokens:
      raise ValueError(f"max_new_tokens={sampling.max_new_tokens}; the cache was prefilled for {state.new_tokens}")
    eos = np.asarray(self.eos_ids or (-1,), np.int32)
    out = self._decode(self.params, state.logits_BxV, state.cache, state.position_B, state.kv_mask_BxS,
                       np.int32(state.bucket), np.uint32(sampling.seed), eos, new_tokens=state.new_tokens,
                       temperature=float(sampling.temperature), top_p=float(sampling.top_p))
    return np.asarray(out)[:, :sampling.max_new_tokens]

  def continuation_nll(self, prompts: list[list[int]], continuations: list[list[list[int]]],
                       soft_prompt_BxPxD=None, soft_at=None, length: int = 0,
                       state: Prefilled | None = None) -> list[list[tuple[float, int]]]:
    """Per prompt, per continuation: (summed NLL, token count) of the continuation after the prompt.

    Continuations are right-padded to the smallest of the fixed shapes' answer buckets that
    holds the longest, else to `length` or the longest rounded up to a multiple of 8; a row with
    fewer continuations than the others gets none for the missing ones. `state`: these prompts
    already prefilled (`prefill`; generation may decode from it afterwards), else prefilled here.
    """
    if len(continuations) != len(prompts):
      raise ValueError(f"{len(continuations)} continuation lists for {len(prompts)} prompts")
    if min((len(c) for cs in continuations for c in cs), default=1) < 1:
      raise ValueError("an empty continuation has no likelihood to compare")
    longest = max(len(c) for cs in continuations for c in cs)
    a = self.shapes.answer_slots(longest) if self.shapes else max(length, -(-longest // 8) * 8)
    if state is None:
      state = self.prefill(prompts, soft_prompt_BxPxD, soft_at, new_tokens=0, answer_len=a)
    elif a > max(state.answer_len, state.new_tokens):
      raise ValueError(f"continuations of {a} slots; the prefilled cache has room for "
                       f"{max(state.answer_len, state.new_tokens)}")
    out = [[] for _ in prompts]
    for c in range(max(len(cs) for cs in continuations)):
      tokens = np.full((len(prompts), a), self.pad_id, np.int32)
      cmask = np.zeros((len(prompts), a), np.int32)
      for b, cs in enumerate(continuations):
        if c < len(cs):
          tokens[b, :len(cs[c])] = cs[c]
          cmask[b, :len(cs[c])] = 1
      nll, count = jax.device_get(self._continue(self.params, state.logits_BxV, state.cache, state.kv_mask_BxS,
                                                 state.position_B, np.int32(state.bucket), tokens, cmask))
      for b, cs in enumerate(continuations):
        if c < len(cs):
          out[b].append((float(nll[b]), int(count[b])))
    return out

  def generate(self, prompts: list[list[int]], sampling: SamplingConfig = SamplingConfig(),
               soft_prompt_BxPxD=None, use_cache: bool = True, soft_at=None) -> list[list[int]]:
    """New tokens per prompt, up to (not including) the first end-of-sequence token."""
    if not prompts:
      return []
    if use_cache:
      out = self.decode(self.prefill(prompts, soft_prompt_BxPxD, soft_at, sampling.max_new_tokens), sampling)
    else:
      out = self._generate_without_cache(prompts, sampling, soft_prompt_BxPxD, soft_at)
    results = []
    for row in out:
      stop = next((i for i, x in enumerate(row) if x in self.eos_ids), len(row))
      results.append(row[:stop].tolist())
    return results

  def _generate_without_cache(self, prompts, sampling, soft_prompt_BxPxD, soft_at) -> np.ndarray:
    """The reference path: the whole sequence recomputed for every new token (tests compare)."""
    t, n = bucket_length(_longest(prompts, soft_prompt_BxPxD)), sampling.max_new_tokens
    ids, mask, soft, start_B = self._inputs(prompts, soft_prompt_BxPxD, soft_at, t)
    embeds = jax.jit(self._embeds)(self.params, ids, soft, start_B)
    buffer = jnp.pad(embeds, ((0, 0), (0, n), (0, 0)))
    kv_mask = jnp.pad(jnp.asarray(mask), ((0, 0), (0, n)))
    key = jax.random.PRNGKey(sampling.seed)
    out = np.full((len(prompts), n), self.pad_id, np.int32)
    done = np.zeros(len(prompts), bool)
    logits = self._full(self.params, buffer, kv_mask, t - 1)
    for step in range(n):
      key, sub = jax.random.split(key)
      token = _sample(logits, sub, sampling.temperature, sampling.top_p)
      out[:, step] = np.where(done, self.pad_id, np.asarray(token))
      done |= np.isin(np.asarray(token), np.asarray(self.eos_ids or (-1,)))
      if done.all():
        break
      buffer = buffer.at[:, t + step].set(self._embed(self.params, token[:, None])[:, 0])
      kv_mask = kv_mask.at[:, t + step].set(1)
      logits = self._full(self.params, buffer, kv_mask, t + step)
    return out


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
