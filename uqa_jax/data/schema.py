"""The official UQABench on-disk schema and task labels: the one source of truth.

Every module that names a feature column, a vocabulary table, a file or a task label
imports it from here.
"""

import dataclasses

import pyarrow as pa

MAX_LEN = 512  # official maximum history length; the most recent items are kept
PAD_ID = 0  # id 0 of every table is padding; real ids start at 1


@dataclasses.dataclass(frozen=True)
class Feature:
  """One sequence column: `list<list<int64>>`, time step -> bag of ids from `table`."""
  column: str
  table: str
  is_text: bool


FEATURES = (
    Feature("uni_seq_item_id", "item", False),
    Feature("uni_seq_cate_id", "cate", False),
    Feature("uni_seq_brand_id", "brand", False),
    Feature("uni_seq_shop_id", "shop", False),
    Feature("uni_seq_seller_id", "seller", False),
    Feature("uni_seq_title_bpe_token_ids", "bpe", True),
    Feature("uni_seq_cate_bpe_token_ids", "bpe", True),
    Feature("uni_seq_shop_bpe_token_ids", "bpe", True),
    Feature("uni_seq_brand_bpe_token_ids", "bpe", True),
    Feature("uni_seq_seller_bpe_token_ids", "bpe", True),
)
FEATURE_COLUMNS = tuple(f.column for f in FEATURES)
ITEM_COLUMN = "uni_seq_item_id"
TEXT_COLUMN = "text"  # align files: JSON chat list [{"role": "user", ...}, {"role": "assistant", ...}]
TASK_COLUMN = "task"  # ours only; official files derive it with `classify_official`
# Ours only, optional: one click time per step (int64 seconds, non-decreasing). HSTU's time bias
# reads it; files without it (the official ones) simply give no time signal.
TIME_COLUMN = "uni_seq_timestamp"
TIME_TYPE = pa.list_(pa.int64())

# Official vocabulary sizes and embedding widths (paper / official code).
OFFICIAL_VOCAB_SIZES = {
    "item": 994_447, "cate": 9_330, "brand": 149_750,
    "shop": 268_446, "seller": 268_446, "bpe": 151_936,
}
OFFICIAL_EMBED_DIMS = {"item": 128, "cate": 64, "brand": 64, "shop": 64, "seller": 64, "bpe": 64}
TABLES = tuple(OFFICIAL_VOCAB_SIZES)

SEQ_TYPE = pa.list_(pa.list_(pa.int64()))
PRETRAIN_SCHEMA = pa.schema([pa.field(c, SEQ_TYPE) for c in FEATURE_COLUMNS])
ALIGN_SCHEMA = PRETRAIN_SCHEMA.append(pa.field(TEXT_COLUMN, pa.string()))

SPLITS = ("train", "eval")
KINDS = ("pretrain", "align")
DATASET_INFO = "dataset_info.json"


def file_name(kind: str, split: str) -> str:
  """`pretrain_data_train.arrow` etc., the official file names."""
  if kind not in KINDS or split not in SPLITS:
    raise ValueError(f"kind must be one of {KINDS} and split one of {SPLITS}, got {kind!r}, {split!r}")
  return f"{kind}_data_{split}.arrow"


ALL_FILES = tuple(file_name(k, s) for k in KINDS for s in SPLITS)

# --- The seven sub-tasks and their groups (paper Table 1). -------------------------------
TASKS = ("DF", "MF", "IP", "AP", "LI", "SI", "IT")
TASK_NAMES = {
    "DF": "direct feature", "MF": "match feature", "IP": "item prediction",
    "AP": "attribute prediction", "LI": "long-term interest", "SI": "short-term interest",
    "IT": "interest trajectory",
}
GROUPS = {
    "sequence understanding": ("DF", "MF"),
    "action prediction": ("IP", "AP"),
    "interest perception": ("LI", "SI", "IT"),
}

# The official scorer's task assignment: the first task whose substrings occur in the
# question wins, checked in this order. `en` mirrors it for our English templates.
TASK_RULES = {
    "zh": (
        ("DF", ("次浏览的商品的", "次（从1开始计数）浏览的")),
        ("MF", ("长度是多少？", "的商品有多少个")),
        ("IP", ("下一个可能点击的商品的标题是什么",)),
        ("AP", ("用户下一个可能点击的商品的",)),
        ("LI", ("用户最感兴趣的3个",)),
        ("SI", ("用户近期最感兴趣的",)),
        ("IT", ("偏好的转移路径是什么",)),
    ),
    "en": (
        ("DF", ("items the user clicked, in order", "the user clicked (counting from 1)")),
        ("MF", ("How long is the user's click history", "How many of the user's clicked items")),
        ("IP", ("Which item will the user most likely click next",)),
        ("AP", ("of the item the user will most likely click next",)),
        ("LI", ("the user's top 3",)),
        ("SI", ("the user most interested in recently",)),
        ("IT", ("preference shifted over time",)),
    ),
}
LANGUAGES = tuple(TASK_RULES)


def classify_question(question: str, language: str = "zh") -> str | None:
  """Returns the task label the (official, for `zh`) substring rule assigns, or None."""
  try:
    rules = TASK_RULES[language]
  except KeyError:
    raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}") from None
  for task, needles in rules:
    if any(n in question for n in needles):
      return task
  return None


def task_of(label: str | None, question: str, language: str) -> str:
  """The task of one align row: its `task` label (ours) checked against the rule, or the rule's.

  Raises ValueError for an unknown label, a question no rule classifies, or a label the rule
  contradicts: nothing maps to a default task.
  """
  derived = classify_question(question, language)
  if label is not None and label not in TASKS:
    raise ValueError(f"unknown task label {label!r}, expected one of {TASKS}")
  if derived is None:
    raise ValueError(f"unclassifiable: no `{language}` task rule matches the question {question[:80]!r}")
  if label is not None and label != derived:
    raise ValueError(f"task mismatch: labelled {label}, the `{language}` rule says {derived}")
  return derived
