"""`qformer`: `num_queries` learned queries (init N(0, 0.02)) that, per layer, self-attend, then
cross-attend to the LayerNorm'd encoder states, then pass an MLP (pre-LayerNorm, residual); a
final LayerNorm and a linear map to d_llm give `num_queries` soft tokens.

The paper's Q-Former diverged (NaN losses). Here, by construction:
  * padded states are zeroed with `where` before anything reads them (NaN × 0 would stay NaN);
  * the states are LayerNorm'd before cross-attention, so their scale is fixed;
  * masking uses a large finite negative, and every query also attends to the queries
    themselves in cross-attention, so no softmax row is ever fully masked (an all-padding
    history gives attention over the queries alone, not 0/0);
  * all adapter maths and every softmax run in float32.
Shape letters: B batch, L history, D encoder width, Q queries, C query width, H heads, E head dim.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from uqa_jax.adapters import common
from uqa_jax.adapters.config import AdapterConfig

READS = ("num_queries", "num_layers", "num_heads", "d_model")
MASKED = -1e9  # finite: a fully masked row (impossible here anyway) could not produce NaN


def num_tokens(cfg: AdapterConfig) -> int:
  return cfg.num_queries


def attend(q_BxQxHxE, k_BxSxHxE, v_BxSxHxE, keep_BxS):
  """Softmax attention in float32 over the kept keys."""
  scale = q_BxQxHxE.shape[-1] ** -0.5
  logits_BxHxQxS = jnp.einsum("bqhe,bshe->bhqs", q_BxQxHxE, k_BxSxHxE) * scale
  logits_BxHxQxS = jnp.where(keep_BxS[:, None, None, :], logits_BxHxQxS, MASKED)
  weights = jax.nn.softmax(logits_BxHxQxS, axis=-1)
  return jnp.einsum("bhqs,bshe->bqhe", weights, v_BxSxHxE)


class Layer(nn.Module):
  cfg: AdapterConfig

  @nn.compact
  def __call__(self, x_BxQxC, memory_BxLxC, keep_BxL):
    c = self.cfg
    width, heads = c.d_model, c.num_heads
    split = lambda t: t.reshape(*t.shape[:2], heads, width // heads)
    merge = lambda t: t.reshape(*t.shape[:2], width)
    norm = common.layer_norm
    queries_all = jnp.ones(x_BxQxC.shape[:2], bool)

    y = norm("self_norm")(x_BxQxC)
    q, k, v = jnp.split(common.dense(3 * width, "self_qkv")(y), 3, axis=-1)
    x_BxQxC = x_BxQxC + common.dense(width, "self_out")(merge(attend(split(q), split(k), split(v), queries_all)))

    y = norm("cross_norm")(x_BxQxC)
    source_BxSxC = jnp.concatenate([y, memory_BxLxC], axis=1)  # the queries themselves, then the states
    keep_BxS = jnp.concatenate([queries_all, keep_BxL], axis=1)
    q = common.dense(width, "cross_q")(y)
    k, v = jnp.split(common.dense(2 * width, "cross_kv")(source_BxSxC), 2, axis=-1)
    x_BxQxC = x_BxQxC + common.dense(width, "cross_out")(merge(attend(split(q), split(k), split(v), keep_BxS)))

    y = norm("mlp_norm")(x_BxQxC)
    return x_BxQxC + common.dense(width, "mlp_out")(nn.gelu(common.dense(4 * width, "mlp_in")(y)))


class Model(nn.Module):
  cfg: AdapterConfig

  @nn.compact
  def __call__(self, states_BxLxD, mask_BxL):
    c = self.cfg
    if c.d_model % c.num_heads:
      raise ValueError(f"adapter.d_model={c.d_model} is not divisible by adapter.num_heads={c.num_heads}")
    keep_BxL = mask_BxL.astype(bool)
    memory = common.layer_norm("state_norm")(common.valid_states(states_BxLxD, mask_BxL))
    memory_BxLxC = common.dense(c.d_model, "state_proj")(memory)
    queries_QxC = self.param("queries", common.named(nn.initializers.normal(0.02)), (c.num_queries, c.d_model), jnp.float32)
    x_BxQxC = jnp.broadcast_to(queries_QxC, (states_BxLxD.shape[0], *queries_QxC.shape))
    for i in range(c.num_layers):
      x_BxQxC = Layer(c, name=f"layer_{i}")(x_BxQxC, memory_BxLxC, keep_BxL)
    tokens = common.token_dense(c.d_llm, "out")(common.layer_norm("final_norm")(x_BxQxC))
    return common.OutputNorm(c.embed_rms, name="out_norm")(tokens)
