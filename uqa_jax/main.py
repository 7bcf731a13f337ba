"""`python -m uqa_jax.main --config configs/<name>.py [--config.key=value ...] [--workdir DIR]`.

Runs the stages the config names, in order: data -> pretrain -> align -> evaluate.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from uqa_jax import choices

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for all outputs "
                               "(default: workdir/<config file name>).")


def _stage_runner(name):
  if name == "data":
    from uqa_jax.train import data_stage
    return data_stage.run
  if name == "pretrain":
    from uqa_jax.train import pretrain
    return pretrain.run
  return None  # not built yet


NOT_BUILT = {
    "align": "Stage 2 (adapter + LLM alignment)",
    "evaluate": "Stage 3 (generation + scoring)",
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/default.py")
  choices.check(config)
  logging.set_verbosity(logging.WARNING)  # Orbax and grain log every file operation at INFO
  config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
  # Absolute, so every stage (and Orbax, which refuses relative checkpoint paths) sees the same place.
  workdir = os.path.abspath(_WORKDIR.value or os.path.join("workdir", config_name))
  os.makedirs(workdir, exist_ok=True)
  print(f"uqa-jax: config {config_name}, workdir {workdir}, stages {', '.join(config.stages)}")
  for stage in config.stages:
    runner = _stage_runner(stage)
    if runner is None:
      print(f"[{stage}] not built yet: {NOT_BUILT[stage]} lands in a later release; skipped")
      continue
    start = time.time()
    print(f"[{stage}] start")
    runner(config, workdir)
    print(f"[{stage}] done in {time.time() - start:.1f}s")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
