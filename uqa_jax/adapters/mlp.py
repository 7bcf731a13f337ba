"""`mlp`: LayerNorm -> Linear -> GELU -> Linear on one pooled state (masked mean or last valid
state, `adapter.pool`) -> `num_tokens` soft tokens.
"""

import flax.linen as nn

from uqa_jax.adapters import common
from uqa_jax.adapters.config import AdapterConfig

READS = ("num_tokens", "pool", "d_hidden")


def num_tokens(cfg: AdapterConfig) -> int:
  return cfg.num_tokens


class Model(nn.Module):
  cfg: AdapterConfig

  @nn.compact
  def __call__(self, states_BxLxD, mask_BxL):
    c = self.cfg
    if c.pool == "mean":
      pooled_BxD = common.masked_mean(states_BxLxD, mask_BxL)
    else:
      pooled_BxD = common.last_states(states_BxLxD, mask_BxL, 1)[:, 0]
    h = common.layer_norm("in_norm")(pooled_BxD)
    h = nn.gelu(common.dense(c.d_hidden or c.d_llm, "hidden")(h))
    tokens = common.token_dense(c.num_tokens * c.d_llm, "out")(h).reshape(-1, c.num_tokens, c.d_llm)
    return common.OutputNorm(c.embed_rms, name="out_norm")(tokens)
