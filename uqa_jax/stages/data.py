"""Stage 0: prepare the data set named by `config.data` in `workdir/data`, then check it.

Its fingerprint is the data recipe: `seed`, the `data` block and `llm.model` (the tokenizer the
text is written with), minus what the chosen source does not read (official files: only their
path). The `input` block (bag widths, chat length) only changes how batches are cut, so it is
not read here and changing it never rebuilds the data; the pretrain stage reports how many bags
its widths truncate.
"""


from uqa_jax.config import blocks
from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import checker
from uqa_jax.data import movielens
from uqa_jax.data import official
from uqa_jax.data import schema
from uqa_jax.data import synthetic
from uqa_jax.data.config import DataConfig
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.llm.assets import LLMSource
from uqa_jax.runtime import workdir as workdir_lib

BLOCKS = ("data", "llm")
# The data fields (besides `source`) each source reads; the others stay out of its fingerprint.
READ_BY_SOURCE = {"synthetic": ("language", "max_len", "align_eval_fraction", "train_questions", "filters", "synthetic"),
                  "movielens": ("path", "language", "max_len", "align_eval_fraction", "train_questions", "filters"),
                  "official": ("path", "max_len")}
UPSTREAM = ()
VERSION = 1  # of what it computes; the rule for bumping it: uqa_jax/stages/__init__.py
PROCESSES = "main"  # process 0 builds the data set; the others wait for it





def fingerprint(config) -> dict:
  d = blocks.read(config, DataConfig)
  data = blocks.fingerprint(d, keep=("source",) + READ_BY_SOURCE[d.source])
  if d.source == "official":  # linked as they are: no seed, no tokenizer
    return {"data": data}
  return {"seed": config.seed, "data": data, "llm": {"model": blocks.read(config, LLMSource).model}}


def run(config, workdir: str, log=print) -> dict:
  """Builds (or links) and checks the data set; returns its dataset_info."""
  out = workdir_lib.data_dir(workdir)
  d, model = blocks.read(config, DataConfig), blocks.read(config, LLMSource).model
  filters = d.filters
  tokenizer = lambda: tokenizer_lib.load_tokenizer(model)
  if d.source == "synthetic":
    synthetic.build_dataset(out, d.generator(config.seed), tokenizer(), tokenizer_lib.describe(model),
                            filters, d.align_eval_fraction, max_len=d.max_len, train_questions=d.train_questions,
                            log=log)
  elif d.source == "movielens":
    movielens.build_dataset(out, tokenizer(), tokenizer_lib.describe(model), source=d.path or None,
                            seed=config.seed,
                            filters=filters, align_eval_fraction=d.align_eval_fraction,
                            train_questions=d.train_questions, language=d.language, max_len=d.max_len, log=log)
  elif d.source == "official":
    official.prepare(d.path, out, log=log)
  else:  # choices.check rejects this at start-up
    raise ValueError(f"unknown data source {d.source!r}")
  info = _check(out, log)
  if d.source == "official":
    _report_window(out, d.max_len, log)
    info["answers"] = {split: official.answer_report(out, split) for split in schema.SPLITS}
  for split, report in info["answers"].items():
    log(f"data: answers and floors on align {split} (what any method must beat; official rule "
        f"`prediction.startswith(gold)`):\n  " + "\n  ".join(answers_lib.format_floors(report, schema.TASKS)))
  return info


def _report_window(out: str, max_len: int, log) -> None:
  """The official files keep 512 clicks; a shorter `data.max_len` hides the oldest from the encoder."""
  if max_len >= schema.MAX_LEN:
    return
  for name, (longer, total) in official.rows_longer_than(out, max_len).items():
    if longer:
      log(f"data: WARNING {name}: {longer:,} of {total:,} rows have more than data.max_len={max_len} "
          f"clicks; the encoder reads only the most recent {max_len}, so their answers may refer "
          f"to clicks it does not see")


def _check(out: str, log) -> dict:
  report = checker.check_directory(out)
  log(report.format())
  if not report.ok:
    raise arrow_io.DataFileError(f"data set {out} failed the checker ({len(report.problems)} problems)")
  info = arrow_io.read_dataset_info(out)
  if "qa_per_task" in info:
    per_task = {t: sum(n for k, n in info["qa_per_task"].items() if k.endswith("/" + t))
                for t in schema.TASKS}
    log("data: QA pairs per sub-task: " + ", ".join(f"{t} {n:,}" for t, n in per_task.items()))
  return info
