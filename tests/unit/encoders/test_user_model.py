"""The three input variants use exactly the features they name; the NIP head ties to the item table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax.data import schema
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.embedding import VARIANT_FEATURES, bag_mean
from uqa_jax.encoders.user_model import UserModel

VOCAB = {"item": 50, "cate": 9, "brand": 9, "shop": 9, "seller": 9, "bpe": 30}
DIMS = {"item": 16, "cate": 8, "brand": 8, "shop": 8, "seller": 8, "bpe": 8}


def _batch(seed=0, b=2, l=6, k=3):
  rng = np.random.default_rng(seed)
  batch = {c: rng.integers(1, 9, size=(b, l, k)).astype(np.int32) for c in schema.FEATURE_COLUMNS[1:]}
  batch[schema.ITEM_COLUMN] = rng.integers(1, 50, size=(b, l)).astype(np.int32)
  batch["lengths"] = np.array([l, l - 2], np.int32)
  return batch


@pytest.mark.parametrize("variant", sorted(VARIANT_FEATURES))
def test_variant_reads_exactly_its_features(variant):
  model = UserModel(EncoderConfig(name="trmpp", input_variant=variant, d_model=16, num_layers=1,
                                  num_heads=2, dropout=0.0), VOCAB, DIMS)
  batch = _batch()
  params = model.init(jax.random.PRNGKey(0), batch)
  base = model.apply(params, batch)[0]
  for column in schema.FEATURE_COLUMNS:
    changed = dict(batch)
    changed[column] = _batch(seed=1)[column]
    moved = not np.allclose(model.apply(params, changed)[0], base)
    assert moved == (column in VARIANT_FEATURES[variant]), (variant, column)


def test_bag_mean_ignores_padding_and_empty_bags_give_zeros():
  table = jnp.arange(12.0).reshape(4, 3)
  ids = jnp.array([[[1, 3, 0], [0, 0, 0]]])
  out = bag_mean(table, ids)
  np.testing.assert_allclose(out[0, 0], (table[1] + table[3]) / 2)
  np.testing.assert_allclose(out[0, 1], 0.0)


def test_nip_head_width_is_the_item_table_width():
  model = UserModel(EncoderConfig(name="gru4rec", d_model=16, num_layers=1), VOCAB, DIMS)
  batch = _batch()
  params = model.init(jax.random.PRNGKey(0), batch)
  _, queries, mask = model.apply(params, batch)
  table = model.apply(params, method="item_table")
  assert queries.shape == (2, 6, 16) and table.shape == (50, 16)
  np.testing.assert_array_equal(mask[1], [1, 1, 1, 1, 0, 0])
