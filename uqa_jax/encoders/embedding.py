"""Item embedding shared by all encoders: bags -> mean per feature -> concat -> projection.

Shape letters: B batch, L length, K bag width, E a table's embedding width, D encoder width.
Tables are allocated with their rows rounded up to a multiple of `ROW_MULTIPLE`, so they shard
evenly over any mesh axis; the extra rows are never looked up, and `item_table` returns only the
real items. Variants (paper Table 3): `full` (ids + side ids + text), `no_text` (ids + side ids),
`no_side` (item id only). Id 0 is padding in every table: it never contributes to a mean, and an
empty bag embeds to zeros.
"""

import flax.linen as nn
import jax.numpy as jnp

from uqa_jax.data import schema

VARIANT_FEATURES = {
    "full": schema.FEATURE_COLUMNS,
    "no_text": tuple(f.column for f in schema.FEATURES if not f.is_text),
    "no_side": (schema.ITEM_COLUMN,),
}
TABLE_OF = {f.column: f.table for f in schema.FEATURES}
ROW_MULTIPLE = 128


def padded_rows(vocab_size: int) -> int:
  return -(-vocab_size // ROW_MULTIPLE) * ROW_MULTIPLE


def bag_mean(table_VxE, ids_BxLxK):
  """Mean of the non-zero ids' embeddings per bag; zeros for an empty bag."""
  valid_BxLxK = (ids_BxLxK > 0).astype(table_VxE.dtype)
  emb_BxLxKxE = jnp.take(table_VxE, ids_BxLxK, axis=0) * valid_BxLxK[..., None]
  count_BxLx1 = jnp.maximum(valid_BxLxK.sum(-1, keepdims=True), 1.0)
  return emb_BxLxKxE.sum(-2) / count_BxLx1


class ItemEmbedding(nn.Module):
  """batch dict -> [B, L, D]; `item_table` is the item-id table the NIP head ties to."""
  vocab_sizes: dict  # table -> size (dataset_info.json)
  embed_dims: dict  # table -> width
  d_model: int
  variant: str = "full"
  param_dtype: str = "float32"

  def setup(self):
    if self.variant not in VARIANT_FEATURES:
      raise ValueError(f"input variant {self.variant!r}; expected one of {sorted(VARIANT_FEATURES)}")
    tables = sorted({TABLE_OF[c] for c in VARIANT_FEATURES[self.variant]})
    init = nn.initializers.normal(0.02)
    self.tables = {t: self.param(f"{t}_table", nn.with_logical_partitioning(
        init, ("items" if t == "item" else "vocab", "feature_embed")),
        (padded_rows(self.vocab_sizes[t]), self.embed_dims[t]), jnp.dtype(self.param_dtype))
        for t in tables}
    self.proj = nn.Dense(self.d_model, use_bias=True, param_dtype=jnp.dtype(self.param_dtype),
                         kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                  ("feature_embed", "embed")),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                         name="proj")

  @property
  def item_table(self):
    """[V, E] with V the real item vocabulary (the NIP candidates)."""
    return self.tables["item"][: self.vocab_sizes["item"]]

  def features(self):
    return VARIANT_FEATURES[self.variant]

  def __call__(self, batch):
    parts = []
    for column in VARIANT_FEATURES[self.variant]:
      ids = batch[column]
      if ids.ndim == 2:  # the item id: one per step
        ids = ids[..., None]
      parts.append(bag_mean(self.tables[TABLE_OF[column]], ids))
    return self.proj(jnp.concatenate(parts, axis=-1))
