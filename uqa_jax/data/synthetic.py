"""A Taobao-like synthetic data set with planted structure the seven sub-tasks can probe.

Catalog: categories with Zipf popularity; brands belonging to one or two categories; shops
selling a few brands; sellers owning one or two shops; items = (category, brand, shop) with
Zipf popularity and a title "brand + style + category + model".

Users (all randomness from one seed):
  long-term interest   3 categories with skewed (sorted Dirichlet) weights      -> LI, MF
  trajectory           in the top category, brand A -> B -> C across the history -> IT
  short-term interest  a category that dominates the last `short_window` clicks  -> SI, AP, IP
  favourite brands     per category, so brands and shops cluster too
  repeats and noise    re-clicks of recent items; popularity-sampled clicks
  lengths              log-normal, clipped
The paper's filters (items with < 3 clicks, users too short or long) are applied after.
"""

import dataclasses

import numpy as np

from uqa_jax.data import build
from uqa_jax.data import schema
from uqa_jax.data.catalog import Catalog

_WORDS = {
    "en": {
        "categories": ["running shoes", "phone cases", "face cream", "coffee beans", "desk lamps",
                       "yoga mats", "backpacks", "earbuds", "tea sets", "dog food", "kitchen knives",
                       "rain jackets", "board games", "water bottles", "sunglasses", "notebooks",
                       "lipstick", "bed sheets", "gaming mice", "baby wipes", "wall clocks",
                       "hiking boots", "protein powder", "bath towels", "smart watches",
                       "car chargers", "plant pots", "wool socks", "hair dryers", "photo frames",
                       "cookware", "bike lights", "phone stands", "candles", "tote bags", "snacks",
                       "keyboards", "caps", "umbrellas", "puzzles"],
        "syllables": (["Nor", "Vel", "Kai", "Lum", "Zen", "Aur", "Bri", "Cor", "Dal", "Evo", "Fen",
                       "Gal", "Hal", "Ior", "Jun", "Kor", "Lux", "Mar", "Nev", "Ori"],
                      ["ora", "ix", "ulo", "ano", "ella", "io", "us", "ar", "en", "ova"]),
        "shop_kinds": ["Store", "Outlet", "Shop", "Studio", "House", "Market"],
        "seller_kinds": ["Trading", "Goods", "Retail", "Commerce"],
        "styles": ["Classic", "Ultra", "Lite", "Pro", "Mini", "Max", "Air", "Soft", "Eco", "Plus"],
        "space": " ",
        "attr_words": {"cate": ("category", "categories"), "brand": ("brand", "brands"),
                       "shop": ("shop", "shops")},
    },
    "zh": {
        "categories": ["运动鞋", "手机壳", "面霜", "咖啡豆", "台灯", "瑜伽垫", "双肩包", "耳机", "茶具",
                       "狗粮", "菜刀", "雨衣", "桌游", "水杯", "太阳镜", "笔记本", "口红", "床单",
                       "鼠标", "湿巾", "挂钟", "登山靴", "蛋白粉", "浴巾", "智能手表", "车载充电器",
                       "花盆", "羊毛袜", "吹风机", "相框", "锅具", "车灯", "手机支架", "香薰蜡烛",
                       "帆布包", "零食", "键盘", "棒球帽", "雨伞", "拼图"],
        "syllables": (["华", "美", "优", "佳", "新", "乐", "星", "云", "天", "金", "安", "恒", "盛",
                       "博", "康", "瑞", "达", "丰", "雅", "尚"],
                      ["源", "品", "格", "途", "德", "峰", "宜", "朗", "捷", "诺"]),
        "shop_kinds": ["旗舰店", "专营店", "专卖店", "小铺", "生活馆", "优选店"],
        "seller_kinds": ["贸易", "商贸", "电商", "商行"],
        "styles": ["经典款", "轻薄款", "升级版", "迷你", "加大款", "新款", "环保款", "柔软款", "专业版", "智能款"],
        "space": "",
        "attr_words": {"cate": ("类目", "类目"), "brand": ("品牌", "品牌"), "shop": ("店铺", "店铺")},
    },
}
QA_ATTRS = ("cate", "shop", "brand")  # IT follows the last: brand, the planted trajectory


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_users: int = 600
  num_items: int = 2000
  num_categories: int = 30
  num_brands: int = 120
  num_shops: int = 200
  num_sellers: int = 150
  median_len: int = 80  # log-normal history length ...
  min_len: int = 12  # ... clipped to [min_len, max_len] before filtering
  max_len: int = 700
  long_term_k: int = 3
  short_window: int = 10
  p_short: float = 0.7  # in the last window, probability a click follows the short-term interest
  p_repeat: float = 0.08
  p_noise: float = 0.08
  p_trajectory: float = 0.8  # in the top category, probability the brand follows the trajectory
  p_favourite: float = 0.6
  language: str = "en"
  seed: int = 0

  def __post_init__(self):
    """Settings that could make no user, or no valid history, are refused by name."""
    at_least_one = ("num_users", "num_items", "num_categories", "num_brands", "num_shops", "num_sellers",
                    "median_len", "min_len", "max_len", "long_term_k", "short_window")
    for key in at_least_one:
      if getattr(self, key) < 1:
        raise ValueError(f"{key}={getattr(self, key)}; expected at least 1")
    if self.min_len > self.max_len:
      raise ValueError(f"min_len={self.min_len} > max_len={self.max_len}; expected min_len <= max_len")
    for key in ("p_short", "p_repeat", "p_noise", "p_trajectory", "p_favourite"):
      if not 0.0 <= getattr(self, key) <= 1.0:
        raise ValueError(f"{key}={getattr(self, key)}; expected a probability in [0, 1]")
    if self.language not in _WORDS:
      raise ValueError(f"language={self.language!r}; expected one of {', '.join(sorted(_WORDS))}")


def _zipf(n, rng, a=1.1):
  w = 1.0 / np.arange(1, n + 1) ** a
  return rng.permutation(w / w.sum())


def _unique_names(n, rng, words, suffixes=None):
  """n distinct two-syllable names (plus a kind word), prefix-free so `startswith` scoring is fair."""
  first, second = words["syllables"]
  combos = [a + b for a in first for b in second]
  if n > len(combos):
    raise ValueError(f"synthetic: asked for {n} names, the word bank makes at most {len(combos)}")
  order = rng.permutation(len(combos))[:n]
  if suffixes is None:
    return [""] + [combos[j] for j in order]
  return [""] + [f"{combos[j]}{words['space']}{suffixes[i % len(suffixes)]}" for i, j in enumerate(order)]


def make_catalog(cfg: SyntheticConfig, rng: np.random.Generator):
  """Returns (catalog, category popularity, brands per category, items per (cate, brand))."""
  words = _WORDS[cfg.language]
  if cfg.num_categories > len(words["categories"]):
    raise ValueError(f"synthetic: num_categories={cfg.num_categories}, the {cfg.language} word bank "
                     f"has {len(words['categories'])}")
  cats = [""] + words["categories"][:cfg.num_categories]
  brands = _unique_names(cfg.num_brands, rng, words)
  shops = _unique_names(cfg.num_shops, rng, words, words["shop_kinds"])
  sellers = _unique_names(cfg.num_sellers, rng, words, words["seller_kinds"])
  cat_pop = _zipf(cfg.num_categories, rng)
  # Every brand has a home category (round robin, so each category gets brands) and maybe a second.
  brand_cats = {b: {1 + (b - 1) % cfg.num_categories} for b in range(1, cfg.num_brands + 1)}
  for b in range(1, cfg.num_brands + 1):
    if rng.random() < 0.3:
      brand_cats[b].add(int(rng.integers(1, cfg.num_categories + 1)))
  cat_brands = {c: sorted(b for b, cs in brand_cats.items() if c in cs)
                for c in range(1, cfg.num_categories + 1)}
  brand_shops = {b: rng.choice(np.arange(1, cfg.num_shops + 1), size=int(rng.integers(1, 4)), replace=False)
                 for b in brand_cats}
  shop_seller = rng.integers(1, cfg.num_sellers + 1, size=cfg.num_shops + 1)
  # Each (category, brand) pair gets two items first, so every trajectory can be clicked.
  pairs = [(c, b) for c, bs in cat_brands.items() for b in bs]
  extra = max(0, cfg.num_items - 2 * len(pairs))
  cat_draw = rng.choice(np.arange(1, cfg.num_categories + 1), size=extra, p=cat_pop)
  items = [p for p in pairs for _ in range(2)] + [(int(c), int(rng.choice(cat_brands[c]))) for c in cat_draw]
  titles, side = [""], {"cate": [()], "brand": [()], "shop": [()], "seller": [()]}
  by_pair, taken = {}, set()
  for i, (c, b) in enumerate(items, start=1):
    shop = int(rng.choice(brand_shops[b]))
    side["cate"].append((c,))
    side["brand"].append((b,))
    side["shop"].append((shop,))
    side["seller"].append((int(shop_seller[shop]),))
    sp = words["space"]
    while True:  # titles are unique and fixed-width-coded, so none is a prefix of another
      style = words["styles"][rng.integers(len(words["styles"]))]
      title = f"{brands[b]}{sp}{style}{sp}{cats[c]}{sp}{chr(65 + rng.integers(26))}{rng.integers(100):02d}"
      if title not in taken:
        break
    taken.add(title)
    titles.append(title)
    by_pair.setdefault((c, b), []).append(i)
  catalog = Catalog(titles=titles, side=side,
                    names={"cate": cats, "brand": brands, "shop": shops, "seller": sellers},
                    attr_words=words["attr_words"], language=cfg.language)
  return catalog, cat_pop, cat_brands, by_pair


def _user_history(cfg, rng, cat_pop, cat_brands, by_pair, by_cat, item_pop):
  n_cat = cfg.num_categories
  length = int(np.clip(rng.lognormal(np.log(cfg.median_len), 0.6), cfg.min_len, cfg.max_len))
  long_cats = rng.choice(np.arange(1, n_cat + 1), size=cfg.long_term_k, replace=False, p=cat_pop)
  weights = np.sort(rng.dirichlet(np.full(cfg.long_term_k, 2.0)))[::-1]
  top = int(long_cats[0])
  path = rng.choice(cat_brands[top], size=min(3, len(cat_brands[top])), replace=False)
  favourite = {c: int(rng.choice(cat_brands[c])) for c in range(1, n_cat + 1)}
  short = int(rng.integers(1, n_cat + 1)) if rng.random() < 0.5 else int(long_cats[-1])
  history = []
  for t in range(length):
    r = rng.random()
    if history and r < cfg.p_repeat:
      history.append(history[-int(rng.integers(1, min(5, len(history)) + 1))])
      continue
    if r < cfg.p_repeat + cfg.p_noise:
      history.append(int(rng.choice(len(item_pop), p=item_pop)) + 1)
      continue
    if t >= length - cfg.short_window and rng.random() < cfg.p_short:
      c = short
    else:
      c = int(rng.choice(long_cats, p=weights))
    if c == top and rng.random() < cfg.p_trajectory:
      b = int(path[min(len(path) - 1, len(path) * t // length)])
    elif rng.random() < cfg.p_favourite:
      b = favourite[c]
    else:
      b = int(rng.choice(cat_brands[c]))
    pool = by_pair.get((c, b)) or by_cat[c]
    history.append(int(pool[rng.integers(len(pool))]) if len(pool) < 3 else
                   int(pool[min(len(pool) - 1, int(rng.zipf(1.5)) - 1)]))
  plan = {"long_term": long_cats.tolist(), "weights": weights.tolist(), "trajectory": path.tolist(),
          "short_term": short}
  return np.array(history, dtype=np.int64), plan


def generate(cfg: SyntheticConfig):
  """Returns (catalog, click histories, per-user planted plans), deterministic in `cfg.seed`.

  A plan records what was planted: long-term categories (by weight), the brand trajectory
  in the top category, the short-term category. Tests check the data shows it.
  """
  if cfg.language not in _WORDS:
    raise ValueError(f"synthetic language {cfg.language!r}; expected one of {sorted(_WORDS)}")
  rng = np.random.default_rng(cfg.seed)
  catalog, cat_pop, cat_brands, by_pair = make_catalog(cfg, rng)
  by_cat = {}
  for i in range(1, catalog.num_items + 1):
    by_cat.setdefault(catalog.label("cate", i), []).append(i)
  item_pop = _zipf(catalog.num_items, rng, a=0.8)
  users = [_user_history(cfg, rng, cat_pop, cat_brands, by_pair, by_cat, item_pop)
           for _ in range(cfg.num_users)]
  return catalog, [h for h, _ in users], [p for _, p in users]


SESSION_GAP_S = 90.0  # mean seconds between clicks within a session ...
SESSION_BREAK_S = 36 * 3600.0  # ... and between sessions
P_SESSION_BREAK = 0.12
END_TIME = 1_704_067_200  # every history ends at 2024-01-01 00:00 UTC


def click_times(cfg: SyntheticConfig, lengths) -> list[np.ndarray]:
  """Session-shaped click times (int64 seconds, non-decreasing) for histories of `lengths`.

  Exponential gaps: short within a session, long between sessions. Drawn from their own
  generator so the clicks themselves are the same with or without times.
  """
  rng = np.random.default_rng([cfg.seed, 1])
  out = []
  for n in lengths:
    breaks = rng.random(n - 1) < P_SESSION_BREAK
    gaps = rng.exponential(np.where(breaks, SESSION_BREAK_S, SESSION_GAP_S))
    since_start = np.concatenate([[0.0], np.cumsum(gaps)])
    out.append((END_TIME - since_start[-1] + since_start).astype(np.int64))
  return out


def build_dataset(out_dir: str, cfg: SyntheticConfig, tokenizer, tokenizer_name: str,
                  filters: build.Filters = build.Filters(), align_eval_fraction: float = 0.1,
                  max_len: int = schema.MAX_LEN, train_questions: int = 1, log=print) -> dict:
  """Generates, filters and writes the synthetic data set (most recent `max_len` clicks) to `out_dir`."""
  catalog, histories, _ = generate(cfg)
  times = click_times(cfg, [len(h) for h in histories])
  histories, times, kept, stats = build.filter_interactions(histories, filters, times)
  log("synthetic: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
  return build.write_dataset(
      out_dir, name=f"synthetic-{cfg.language}-seed{cfg.seed}", source="synthetic",
      catalog=catalog.remap_items(kept), histories=histories, times=times, tokenizer=tokenizer,
      tokenizer_name=tokenizer_name, qa_attrs=QA_ATTRS, seed=cfg.seed,
      align_eval_fraction=align_eval_fraction, max_len=max_len, train_questions=train_questions, log=log,
      extra_info={"filter_stats": stats, "generator": dataclasses.asdict(cfg)})
