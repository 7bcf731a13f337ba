"""`recent`: one soft token per recent click (as E4SRec and LLaRA give one per item) — the last
`num_tokens` valid encoder states, oldest first, each through one shared linear map — plus the
masked mean through the same map as a first token: `num_tokens + 1` tokens. Recent clicks are
what next-item and short-term questions ask about; a mean over hundreds of states blurs them.
A row shorter than `num_tokens` gives zero states in its first slots; they become the map's
(learned, randomly initialised) bias token, never an exact zero (see `common.token_dense`).
"""

import flax.linen as nn
import jax.numpy as jnp

from uqa_jax.adapters import common
from uqa_jax.adapters.config import AdapterConfig

READS = ("num_tokens",)


def num_tokens(cfg: AdapterConfig) -> int:
  return cfg.num_tokens + 1


class Model(nn.Module):
  cfg: AdapterConfig

  @nn.compact
  def __call__(self, states_BxLxD, mask_BxL):
    c = self.cfg
    mean_Bx1xD = common.masked_mean(states_BxLxD, mask_BxL)[:, None]
    recent_BxKxD = common.last_states(states_BxLxD, mask_BxL, c.num_tokens)
    tokens = common.token_dense(c.d_llm, "proj")(jnp.concatenate([mean_Bx1xD, recent_BxKxD], axis=1))
    return common.OutputNorm(c.embed_rms, name="out_norm")(tokens)
