"""The Stage 1 model: item embedding -> encoder -> NIP head tied to the item-id table.

Shape letters: B batch, L length, D encoder width, E item-id embedding width.
"""

import flax.linen as nn
import jax.numpy as jnp

from uqa_jax import encoders
from uqa_jax.data import schema
from uqa_jax.encoders import common
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.embedding import ItemEmbedding


def check_embed_dims(embed_dims: dict) -> None:
  """Raises ValueError naming the tables of `embed_dims` (table -> width overrides) that do not exist."""
  unknown = sorted(set(embed_dims) - set(schema.TABLES))
  if unknown:
    raise ValueError(f"embed_dims: unknown tables {unknown}; expected some of {list(schema.TABLES)}")


class UserModel(nn.Module):
  cfg: EncoderConfig
  vocab_sizes: dict
  embed_dims: dict

  def setup(self):
    self.embed = ItemEmbedding(self.vocab_sizes, self.embed_dims, self.cfg.d_model, self.cfg.input_variant,
                               self.cfg.param_dtype)
    self.encoder = encoders.get(self.cfg.name)(self.cfg)
    self.head = common.dense(self.embed_dims["item"], ("embed", "feature_embed"), self.cfg, name="head")

  def __call__(self, batch, deterministic=True):
    """-> (states [B, L, D], NIP queries [B, L, E], mask [B, L])."""
    length = batch["uni_seq_item_id"].shape[1]
    mask_BxL = (jnp.arange(length)[None, :] < batch["lengths"][:, None]).astype(jnp.int32)
    x_BxLxD = self.embed(batch) * mask_BxL[..., None]
    h_BxLxD = self.encoder(x_BxLxD, mask_BxL, deterministic, batch.get("timestamps"))
    return h_BxLxD, self.head(h_BxLxD), mask_BxL

  def item_table(self):
    return self.embed.item_table

  def item_rows(self):
    """The item table with its padding rows (ids >= vocab_sizes['item']): evenly shardable."""
    return self.embed.tables["item"]
