"""The Qwen2-family causal decoder (Llama checkpoints: the same graph without q/k/v biases).

Shape letters: B batch, T query tokens, S key slots (T without a cache, the cache length with
one), D model width, H query heads, K key/value heads, E head dim, F MLP width, V vocabulary,
L layers.

Pre-RMSNorm blocks: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); RoPE on q and k
(rotate-half convention, the checkpoint's theta); grouped-query attention (`attend`); layers stacked with `nn.scan`, so parameters of a block carry a
leading `layers` axis. Every parameter carries logical axis names (see `uqa_jax.runtime.parallel`), and
so do the activations a sharded step pins (residual stream, q/k/v heads, MLP hidden, logits, KV
cache: no-ops outside `parallel.Sharded`). `cfg.remat` recomputes each layer in the backward
pass instead of keeping its activations (what a 3B/7B alignment step needs to fit).

Key/value slots: a query at slot i attends to slots j <= i with `kv_mask[b, j]` (and always
to itself, so a padding query never sees an empty row). With a cache, this call's keys and
values are written at slots [slot, slot + T) of the per-layer cache first; a static (Python int)
slot attends only to slots [0, slot + T), so a prefill's attention is T x T, not T x S.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import parallel

BTD = ("batch", "act_length", "act_embed")  # the residual stream
BTHE = ("batch", "act_length", "act_heads", "head_dim")
BTKE = ("batch", "act_length", "act_kv_heads", "head_dim")
CACHE = ("layers", "batch", "cache_length", "act_kv_heads", "head_dim")  # [L, B, S, K, E]

Cache = dict  # {"k": [L, B, S, K, E], "v": [L, B, S, K, E]}


def _param(module, name, shape, axes, dtype, init=nn.initializers.normal(0.02)):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD):
    scale_D = _param(self, "scale", (x_BxTxD.shape[-1],), ("norm",), self.param_dtype,
                     nn.initializers.ones)
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * scale_D.astype(jnp.float32)).astype(x_BxTxD.dtype)


def rope(x_BxTxNxE, positions_BxT, theta: float):
  """Rotary embedding, rotate-half convention (as Hugging Face's Qwen2/Llama)."""
  e = x_BxTxNxE.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, e, 2, dtype=jnp.float32) / e))
  angles_BxTxE2 = positions_BxT[..., None].astype(jnp.float32) * inv_freq
  cos = jnp.cos(angles_BxTxE2)[:, :, None, :]
  sin = jnp.sin(angles_BxTxE2)[:, :, None, :]
  x = x_BxTxNxE.astype(jnp.float32)
  x1, x2 = x[..., : e // 2], x[..., e // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxE.dtype)


def attend(q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask_Bx1xTxS):
  """Grouped-query softmax attention -> [B, T, H, E]; scores and softmax in float32.

  Each key/value head's G = H / K query heads are laid out as one [G·T, E] matrix per (batch,
  kv head), so both products are plain batched matmuls over [B, K]. On CPU this runs the
  training step's attention (forward and backward) about twice as fast as
  `jax.nn.dot_product_attention`'s XLA path, whose grouped einsums transpose per call.
  """
  b, t, h, e = q_BxTxHxE.shape
  s, kv = k_BxSxKxE.shape[1], k_BxSxKxE.shape[2]
  g = h // kv
  q_BxKxQxE = q_BxTxHxE.reshape(b, t, kv, g, e).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, e)
  k_BxKxSxE, v_BxKxSxE = k_BxSxKxE.transpose(0, 2, 1, 3), v_BxSxKxE.transpose(0, 2, 1, 3)
  scores = jnp.einsum("bkqe,bkse->bkqs", q_BxKxQxE, k_BxKxSxE, preferred_element_type=jnp.float32)
  scores_BxKxGxTxS = scores.reshape(b, kv, g, t, s) * (1.0 / e ** 0.5)
  scores_BxKxGxTxS = jnp.where(mask_Bx1xTxS[:, :, None], scores_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  p_BxKxQxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(v_BxSxKxE.dtype).reshape(b, kv, g * t, s)
  out = jnp.einsum("bkqs,bkse->bkqe", p_BxKxQxS, v_BxKxSxE)
  return out.reshape(b, kv, g, t, e).transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


class Attention(nn.Module):
  cfg: LLMConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_Bx1xTxS, cache_kv, slot):
    c = self.cfg
    pd, dt = jnp.dtype(c.param_dtype), jnp.dtype(c.dtype)
    wq = _param(self, "q_kernel", (c.d_model, c.num_heads, c.head_dim), ("embed", "heads", "head_dim"), pd)
    wk = _param(self, "k_kernel", (c.d_model, c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), pd)
    wv = _param(self, "v_kernel", (c.d_model, c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), pd)
    wo = _param(self, "o_kernel", (c.num_heads, c.head_dim, c.d_model), ("heads", "head_dim", "embed"), pd)
    x = x_BxTxD.astype(dt)
    q_BxTxHxE = jnp.einsum("btd,dhe->bthe", x, wq.astype(dt))
    k_BxTxKxE = jnp.einsum("btd,dke->btke", x, wk.astype(dt))
    v_BxTxKxE = jnp.einsum("btd,dke->btke", x, wv.astype(dt))
    if c.qkv_bias:
      zeros = nn.initializers.zeros
      q_BxTxHxE += _param(self, "q_bias", (c.num_heads, c.head_dim), ("heads", "head_dim"), pd, zeros).astype(dt)
      k_BxTxKxE += _param(self, "k_bias", (c.num_kv_heads, c.head_dim), ("kv_heads", "head_dim"), pd, zeros).astype(dt)
      v_BxTxKxE += _param(self, "v_bias", (c.num_kv_heads, c.head_dim), ("kv_heads", "head_dim"), pd, zeros).astype(dt)
    q_BxTxHxE = parallel.constrain(rope(q_BxTxHxE, positions_BxT, c.rope_theta), BTHE)
    k_BxTxKxE = parallel.constrain(rope(k_BxTxKxE, positions_BxT, c.rope_theta), BTKE)
    v_BxTxKxE = parallel.constrain(v_BxTxKxE, BTKE)
    if cache_kv is not None:
      # The whole cache rides in the scan carry and is updated in place at (layer, slot);
      # a scanned-out cache would be copied every layer.
      k_all, v_all, layer = cache_kv
      k_all = jax.lax.dynamic_update_slice(k_all, k_BxTxKxE[None].astype(k_all.dtype), (layer, 0, slot, 0, 0))
      v_all = jax.lax.dynamic_update_slice(v_all, v_BxTxKxE[None].astype(v_all.dtype), (layer, 0, slot, 0, 0))
      span = mask_Bx1xTxS.shape[-1]  # the slots this call can see (a prefill: its own)
      k_BxSxKxE = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False)[:, :span]
      v_BxSxKxE = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False)[:, :span]
      new_cache = (parallel.constrain(k_all, CACHE), parallel.constrain(v_all, CACHE))
    else:
      k_BxSxKxE, v_BxSxKxE, new_cache = k_BxTxKxE, v_BxTxKxE, None
    out_BxTxHxE = attend(q_BxTxHxE, k_BxSxKxE.astype(dt), v_BxSxKxE.astype(dt), mask_Bx1xTxS)
    y_BxTxD = jnp.einsum("bthe,hed->btd", out_BxTxHxE, wo.astype(dt))
    return y_BxTxD, new_cache


class MLP(nn.Module):
  cfg: LLMConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c = self.cfg
    pd, dt = jnp.dtype(c.param_dtype), jnp.dtype(c.dtype)
    gate = _param(self, "gate_kernel", (c.d_model, c.d_ff), ("embed", "mlp"), pd)
    up = _param(self, "up_kernel", (c.d_model, c.d_ff), ("embed", "mlp"), pd)
    down = _param(self, "down_kernel", (c.d_ff, c.d_model), ("mlp", "embed"), pd)
    x = x_BxTxD.astype(dt)
    h_BxTxF = parallel.constrain(nn.silu(x @ gate.astype(dt)) * (x @ up.astype(dt)), ("batch", "act_length", "act_mlp"))
    return h_BxTxF @ down.astype(dt)


class Block(nn.Module):
  """One layer; scanned over layers with carry (x, cache k/v [L, B, S, K, E] or None, layer index)."""
  cfg: LLMConfig

  @nn.compact
  def __call__(self, carry, positions_BxT, mask_Bx1xTxS, slot):
    x_BxTxD, cache, layer = carry
    c = self.cfg
    pd = jnp.dtype(c.param_dtype)
    cache_kv = None if cache is None else (*cache, layer)
    h, cache = Attention(c, name="attn")(RMSNorm(c.rms_eps, pd, name="attn_norm")(x_BxTxD),
                                         positions_BxT, mask_Bx1xTxS, cache_kv, slot)
    x_BxTxD = parallel.constrain(x_BxTxD + h, BTD)
    x_BxTxD = x_BxTxD + MLP(c, name="mlp")(RMSNorm(c.rms_eps, pd, name="mlp_norm")(x_BxTxD))
    return (parallel.constrain(x_BxTxD, BTD), cache, layer + 1), None


def attention_mask(kv_mask_BxS, slot, num_queries):
  """[B, 1, T, S] bool: query slot i sees valid key slots j <= i, and itself."""
  s = kv_mask_BxS.shape[1]
  q_T = slot + jnp.arange(num_queries)
  k_S = jnp.arange(s)
  causal_TxS = k_S[None, :] <= q_T[:, None]
  self_TxS = k_S[None, :] == q_T[:, None]
  mask = (causal_TxS[None] & kv_mask_BxS[:, None, :].astype(bool)) | self_TxS[None]
  return mask[:, None]


class Decoder(nn.Module):
  """Causal LM. `__call__` -> (logits [B, T, V], the updated cache or None without one)."""
  cfg: LLMConfig

  def setup(self):
    c = self.cfg
    pd = jnp.dtype(c.param_dtype)
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
        (c.vocab_size, c.d_model), pd)
    block = nn.remat(Block) if c.remat else Block  # keeps each layer's input only; recomputes the rest
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=c.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})(c, name="layers")
    self.norm = RMSNorm(c.rms_eps, pd, name="norm")
    if not c.tie_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")),
          (c.d_model, c.vocab_size), pd)

  def embed(self, tokens_BxT):
    """Input embeddings [B, T, D] of token ids (for splicing soft prompts)."""
    return jnp.take(self.embedding, tokens_BxT, axis=0).astype(jnp.dtype(self.cfg.dtype))

  def __call__(self, tokens=None, embeds=None, *, positions, kv_mask, cache: Cache | None = None,
               slot=0, last_only: bool = False, logits_at=None):
    """tokens [B, T] or embeds [B, T, D]; positions [B, T]; kv_mask [B, S]; cache k/v [L, B, S, K, E].

    `last_only` computes logits for the last position only ([B, 1, V]), as prefill needs;
    `logits_at` [B, A] for those positions only ([B, A, V]), as a loss over a few answer
    tokens needs (the vocabulary projection is the largest matmul of a small LLM).
    """
    if (tokens is None) == (embeds is None):
      raise ValueError("Decoder: pass exactly one of tokens [B, T] or embeds [B, T, D]")
    x_BxTxD = self.embed(tokens) if embeds is None else embeds.astype(jnp.dtype(self.cfg.dtype))
    x_BxTxD = parallel.constrain(x_BxTxD, BTD)
    if cache is not None and isinstance(slot, int):  # a static slot: later slots cannot be seen
      kv_mask = kv_mask[:, :slot + x_BxTxD.shape[1]]
    mask = attention_mask(kv_mask, slot, x_BxTxD.shape[1])
    kv = None if cache is None else (cache["k"], cache["v"])
    (x_BxTxD, kv, _), _ = self.layers((x_BxTxD, kv, jnp.int32(0)), positions, mask, slot)
    if last_only:
      x_BxTxD = x_BxTxD[:, -1:]
    if logits_at is not None:
      x_BxTxD = jnp.take_along_axis(x_BxTxD, logits_at[..., None], axis=1)
    x_BxTxD = self.norm(x_BxTxD)
    head = self.embedding.T if self.cfg.tie_embeddings else self.lm_head
    logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD.astype(jnp.float32), head.astype(jnp.float32))
    logits_BxTxV = parallel.constrain(logits_BxTxV, ("batch", "act_length", "act_vocab"))
    return logits_BxTxV, None if kv is None else {"k": kv[0], "v": kv[1]}


def init_params(cfg: LLMConfig, rng):
  """The decoder's parameters (boxed with their logical axes) from a two-token example; under
  `jax.eval_shape` the shapes, dtypes and names alone."""
  ids_1x2 = jnp.zeros((1, 2), jnp.int32)
  return Decoder(cfg).init(rng, ids_1x2, positions=ids_1x2, kv_mask=jnp.ones((1, 2), jnp.int32))["params"]


def init_cache(cfg: LLMConfig, batch: int, length: int, dtype=None) -> Cache:
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  dtype = jnp.dtype(dtype or cfg.dtype)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def positions_from_mask(mask_BxT):
  """Left-padded prompts: position = number of valid tokens before (0 on padding)."""
  return jnp.maximum(jnp.cumsum(mask_BxT, axis=1) - 1, 0).astype(jnp.int32)
