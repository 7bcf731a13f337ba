"""An item catalog (ids, side ids, names) and its conversion to official-format rows.

Both data sources we build (synthetic, MovieLens) describe their items as a `Catalog`;
QA generation reads names from it, and `sequence_columns` turns click histories into the
ten official feature columns, tokenising each name once.
"""

import dataclasses

import numpy as np

from uqa_jax.data import schema

SIDE_TABLES = ("cate", "brand", "shop", "seller")
_TEXT_OF = {  # text feature column -> the names it spells
    "uni_seq_title_bpe_token_ids": "title", "uni_seq_cate_bpe_token_ids": "cate",
    "uni_seq_shop_bpe_token_ids": "shop", "uni_seq_brand_bpe_token_ids": "brand",
    "uni_seq_seller_bpe_token_ids": "seller",
}
_ID_OF = {"uni_seq_item_id": "item", "uni_seq_cate_id": "cate", "uni_seq_brand_id": "brand",
          "uni_seq_shop_id": "shop", "uni_seq_seller_id": "seller"}


@dataclasses.dataclass
class Catalog:
  """Items 1..num_items (0 is padding) with side ids and names.

  side[t][i] is the tuple of ids item i has in table t (empty where the data lacks the
  field; MovieLens genres give several). names[t][j] is the display name of id j.
  attr_words[t] = (singular, plural) in the catalog's language, for the attributes QA asks about.
  """
  titles: list[str]
  side: dict[str, list[tuple[int, ...]]]
  names: dict[str, list[str]]
  attr_words: dict[str, tuple[str, str]]
  language: str

  @property
  def num_items(self) -> int:
    return len(self.titles) - 1

  def label(self, table: str, item: int) -> int:
    """The item's primary id in `table` (the first of its bag; 0 if none)."""
    bag = self.side[table][item]
    return bag[0] if bag else 0

  def name(self, table: str, item: int) -> str:
    return self.names[table][self.label(table, item)]

  def vocab_sizes(self, bpe_vocab_size: int) -> dict[str, int]:
    sizes = {t: len(self.names[t]) for t in SIDE_TABLES}
    return {"item": self.num_items + 1, **sizes, "bpe": bpe_vocab_size}

  def remap_items(self, keep: np.ndarray) -> "Catalog":
    """A catalog of only the items `keep` (old ids, sorted), renumbered 1..len(keep)."""
    index = [0, *keep.tolist()]
    return dataclasses.replace(
        self, titles=[self.titles[i] for i in index],
        side={t: [v[i] for i in index] for t, v in self.side.items()})


class RowEncoder:
  """Per-item bags for all ten feature columns, computed once per catalog and tokenizer."""

  def __init__(self, catalog: Catalog, tokenizer):
    self.catalog = catalog
    encode = lambda texts: [tokenizer.encode(t, add_special_tokens=False) if t else []
                            for t in texts]
    title_tokens = encode(catalog.titles)
    name_tokens = {t: encode(catalog.names[t]) for t in SIDE_TABLES}
    self.bags = {}  # column -> [num_items + 1] list of bags
    for column, table in _ID_OF.items():
      self.bags[column] = ([[i] for i in range(catalog.num_items + 1)] if table == "item"
                           else [list(b) for b in catalog.side[table]])
    for column, table in _TEXT_OF.items():
      if table == "title":
        self.bags[column] = title_tokens
      else:  # a multi-valued field spells all its names, in order
        self.bags[column] = [sum((name_tokens[table][j] for j in bag), [])
                             for bag in catalog.side[table]]

  def columns(self, histories: list[np.ndarray]) -> dict[str, list]:
    """The ten feature columns for the given item-id histories (one row each)."""
    return {c: [[self.bags[c][i] for i in h] for h in histories] for c in schema.FEATURE_COLUMNS}
