"""An item catalog (ids, side ids, names) and its conversion to official-format rows.

Both data sources we build (synthetic, MovieLens) describe their items as a `Catalog`;
QA generation reads names from it, and `sequence_columns` turns click histories into the
ten official feature columns, tokenising each name once.
"""

import dataclasses

import numpy as np
import pyarrow as pa

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
    """The item's one id in a single-valued `table` (0 if none).

    A bag with several ids (MovieLens genres) has no "primary" one: asking for it is an error,
    so no question can silently stand for a whole bag by its first id.
    """
    bag = self.side[table][item]
    if len(bag) > 1:
      raise ValueError(f"item {item} has {len(bag)} ids in table {table!r} ({bag}); "
                       f"use the whole bag (Catalog.side), not a single label")
    return bag[0] if bag else 0

  def is_multi_valued(self, table: str) -> bool:
    return any(len(bag) > 1 for bag in self.side[table])

  def bag_matrix(self, table: str):
    """[num_items + 1, K] int64: row i holds item i's ids in `table`, zero-padded to the widest bag."""
    width = max(1, max(map(len, self.side[table])))
    out = np.zeros((self.num_items + 1, width), dtype=np.int64)
    for i, bag in enumerate(self.side[table]):
      out[i, :len(bag)] = bag
    return out

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
  """Per-item bags for all ten feature columns, computed once per catalog and tokenizer.

  Bags are kept flat per column (CSR: `ids[offsets[i]:offsets[i + 1]]` is item i's bag), so a
  whole file's columns are gathered with numpy and handed to Arrow without a Python object
  per click.
  """

  def __init__(self, catalog: Catalog, tokenizer):
    self.catalog = catalog
    encode = lambda texts: [tokenizer.encode(t, add_special_tokens=False) if t else []
                            for t in texts]
    title_tokens = encode(catalog.titles)
    name_tokens = {t: encode(catalog.names[t]) for t in SIDE_TABLES}
    bags = {}  # column -> [num_items + 1] list of bags
    for column, table in _ID_OF.items():
      bags[column] = ([[i] for i in range(catalog.num_items + 1)] if table == "item"
                      else [list(b) for b in catalog.side[table]])
    for column, table in _TEXT_OF.items():
      if table == "title":
        bags[column] = title_tokens
      else:  # a multi-valued field spells all its names, in order
        bags[column] = [sum((name_tokens[table][j] for j in bag), []) for bag in catalog.side[table]]
    self.csr = {}  # column -> (offsets [num_items + 2] int64, ids int64)
    for column, per_item in bags.items():
      sizes = np.array([len(b) for b in per_item], dtype=np.int64)
      flat = np.fromiter((i for b in per_item for i in b), dtype=np.int64, count=int(sizes.sum()))
      self.csr[column] = (np.concatenate([[0], np.cumsum(sizes)]), flat)

  def columns(self, histories: list[np.ndarray]) -> dict[str, pa.ListArray]:
    """The ten feature columns (`list<list<int64>>` Arrow arrays) for the given item-id histories."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    items = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    step_offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = {}
    for column in schema.FEATURE_COLUMNS:
      offsets, flat = self.csr[column]
      sizes = offsets[items + 1] - offsets[items]
      bag_offsets = np.concatenate([[0], np.cumsum(sizes)])
      within = np.arange(bag_offsets[-1]) - np.repeat(bag_offsets[:-1], sizes)
      ids = flat[np.repeat(offsets[items], sizes) + within]
      out[column] = list_array(step_offsets, list_array(bag_offsets, pa.array(ids, pa.int64())))
    return out


def list_array(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
  """A `list<...>` Arrow array from numpy offsets (checked to fit Arrow's int32 offsets)."""
  if offsets[-1] >= 2**31:
    raise ValueError(f"{offsets[-1]:,} values exceed Arrow list offsets (int32); write fewer rows "
                     f"per file")
  return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
