"""Stage 0: prepare (or reuse) the data set named by the config in `workdir/data`, then check it."""

import json
import os
import shutil

from uqa_jax.data import arrow_io
from uqa_jax.data import build
from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.data import official
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.data import synthetic
from uqa_jax.llm import tokenizer as tokenizer_lib

RECIPE = "recipe.json"  # the config that produced workdir/data, to know when to rebuild


def _recipe(config) -> dict:
  return {"data": config.data.to_dict(), "llm_model": config.llm.model, "seed": config.seed}


def data_dir(workdir: str) -> str:
  return os.path.join(workdir, "data")


def run(config, workdir: str, log=print) -> dict:
  """Returns dataset_info of the checked data set in `workdir/data`."""
  out = data_dir(workdir)
  recipe = _recipe(config)
  recipe_path = os.path.join(out, RECIPE)
  if os.path.exists(recipe_path):
    with open(recipe_path, encoding="utf-8") as f:
      if json.load(f) == json.loads(json.dumps(recipe)):
        log(f"data: reusing {out} (same recipe)")
        return _check(out, config.data.bag_sizes.to_dict(), log)
    log(f"data: config changed since {out} was built; rebuilding")
    shutil.rmtree(out)
  os.makedirs(out, exist_ok=True)
  d = config.data
  filters = build.Filters(d.min_item_count, d.min_user_len, d.max_user_len)
  tokenizer = lambda: tokenizer_lib.load_tokenizer(config.llm.model)
  if d.source == "synthetic":
    cfg = synthetic.SyntheticConfig(**d.synthetic.to_dict(), language=d.language, seed=config.seed)
    synthetic.build_dataset(out, cfg, tokenizer(), tokenizer_lib.describe(config.llm.model),
                            filters, d.align_eval_fraction, log=log)
  elif d.source == "movielens":
    movielens.build_dataset(out, tokenizer(), tokenizer_lib.describe(config.llm.model),
                            seed=config.seed, filters=filters,
                            align_eval_fraction=d.align_eval_fraction, language=d.language, log=log)
  elif d.source == "official":
    official.prepare(d.path, out, log=log)
  else:  # choices.check rejects this at start-up
    raise ValueError(f"unknown data source {d.source!r}")
  info = _check(out, config.data.bag_sizes.to_dict(), log)
  with open(recipe_path, "w", encoding="utf-8") as f:
    json.dump(recipe, f, indent=2)
  return info


def _check(out: str, bag_sizes: dict, log) -> dict:
  report = checker.check_directory(out)
  log(report.format())
  if not report.ok:
    raise arrow_io.DataFileError(f"data set {out} failed the checker ({len(report.problems)} problems)")
  info = arrow_io.read_dataset_info(out)
  for column, (cut, total, widest) in pipeline.bag_truncation(
      os.path.join(out, schema.file_name("pretrain", "train")), bag_sizes.items()).items():
    log(f"data: note: {cut:,} of {total:,} bags in {column} are wider than its bag size "
        f"{bag_sizes[column]} (widest {widest}); batches keep the first {bag_sizes[column]} ids "
        f"(raise data.bag_sizes.{column} to keep more)")
  if "qa_per_task" in info:
    per_task = {t: sum(n for k, n in info["qa_per_task"].items() if k.endswith("/" + t))
                for t in schema.TASKS}
    log("data: QA pairs per sub-task: " + ", ".join(f"{t} {n:,}" for t, n in per_task.items()))
  return info
