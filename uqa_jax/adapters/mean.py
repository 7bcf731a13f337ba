"""`mean` (the official default): a linear map D -> d_llm per position, then the masked mean over
valid positions -> 1 soft token. The map is linear with a bias, so this equals the map applied
to the masked mean of the states, which is how it is computed.
"""

import flax.linen as nn

from uqa_jax.adapters import common
from uqa_jax.adapters.config import AdapterConfig

READS = ()


def num_tokens(cfg: AdapterConfig) -> int:
  return 1


class Model(nn.Module):
  cfg: AdapterConfig

  @nn.compact
  def __call__(self, states_BxLxD, mask_BxL):
    pooled_BxD = common.masked_mean(states_BxLxD, mask_BxL)
    token_BxM = common.token_dense(self.cfg.d_llm, "proj")(pooled_BxD)
    return common.OutputNorm(self.cfg.embed_rms, name="out_norm")(token_BxM[:, None, :])
