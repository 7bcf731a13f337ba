"""Diagnose: does the data determine the answers, and does the frozen encoder's state hold them?

Runs on the Stage 1 export and the align files alone (no LLM weights; the tokenizer decodes the
text features), and writes `workdir/diagnose/<name>/predictions.jsonl` plus one `result.json`:
  ceiling          the count reader (`evaluation/ceiling.py`) on every align-eval question (one
                   it does not answer counts wrong): 100% on DF/MF/SI/LI/IT checks the labels;
                   IP/AP show how predictable the next click is from the last clicks
  probe            a linear probe (`evaluation/probe.py`) per question stem from the Stage 1
                   encoder's states — the masked mean and the last `adapter.num_tokens` valid
                   states for the `recent` adapter (exactly what it reads), the last one for the
                   others (a Q-Former reads every state: the probe sees less than it does) —
                   trained on align-train users, scored on align-eval
  probe_majority   the stem's most frequent train answer on the same questions
  probe_shuffled_labels  the probe trained on train labels shuffled across users
Each is scored like an evaluation run over every align-eval question (official and strict, 95%
intervals over users; unprobed or unanswered questions count wrong, and are counted); the
probe is compared with the majority answer by the paired bootstrap on the probed questions whose
gold is a train answer of its stem (elsewhere no probe can be right: item titles, most counts). The reader diagnostic
(`align.user=oracle_titles`) and the answer-NLL gain are alignment and evaluation runs; the
report shows all of them together.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.adapters import common
from uqa_jax.config import blocks
from uqa_jax.config.recipes import DiagnoseConfig
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.data.config import DataConfig
from uqa_jax.encoders import export as encoder_export
from uqa_jax.evaluation import ceiling
from uqa_jax.evaluation import diagnosis as diagnosis_lib
from uqa_jax.evaluation import probe as probe_lib
from uqa_jax.evaluation import questions as questions_lib
from uqa_jax.evaluation import paired
from uqa_jax.evaluation import scoring
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.llm.assets import LLMSource
from uqa_jax.runtime import workdir as workdir_lib

BLOCKS = ("diagnose",)
UPSTREAM = ("pretrain",)
# What the records hold (the rule: uqa_jax/stages/__init__.py). 2: every align-eval question,
# unanswered ones wrong.
VERSION = 2


def fingerprint(config) -> dict:
  # Stage 1's and the data's settings join it through the runner, which adds every upstream stage's.
  return {"diagnose": {**blocks.fingerprint(blocks.read(config, DiagnoseConfig)),
                       "recent_states": recent_states(config)}}


def recent_states(config) -> int:
  """How many of the last valid states the probe reads: what the `recent` adapter reads, else 1."""
  return config.adapter.num_tokens if config.adapter.name == "recent" else 1


def user_features(model, params, histories: dict, batch_size: int, recent: int = 1) -> dict:
  """{user: [(recent + 1) * D] float32}: the masked mean of the encoder's states and its last
  `recent` valid states (zeros before a short history's start, as the adapter sees them)."""
  def features(p, batch):
    states_BxLxD, _, mask_BxL = model.apply({"params": p}, batch)
    last_BxKxD = common.last_states(states_BxLxD, mask_BxL, recent)
    flat_BxKD = last_BxKxD.reshape(last_BxKxD.shape[0], -1)
    return jnp.concatenate([common.masked_mean(states_BxLxD, mask_BxL), flat_BxKD], -1)
  fn = jax.jit(features)
  users, out = list(histories), {}
  for start in range(0, len(users), batch_size):
    chunk = users[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))  # one shape: one compilation
    batch = {k: np.stack([histories[u][k] for u in padded]) for k in histories[chunk[0]]}
    x = np.asarray(fn(params, batch), np.float32)
    out.update({u: x[i] for i, u in enumerate(chunk)})
  return out


def _score(records: list[dict], samples: int, seed: int) -> dict:
  return {v: scoring.score_records(records, v, samples=samples, seed=seed) for v in ("official", "strict")}


def run(config, workdir: str, log=print) -> dict:
  c = blocks.read(config, DiagnoseConfig)
  start = time.time()
  d = blocks.read(config, DataConfig)
  data_dir = workdir_lib.data_dir(workdir)
  tokenizer = tokenizer_lib.load_tokenizer(blocks.read(config, LLMSource).model)
  questions_lib.check_title_tokenizer(data_dir, blocks.read(config, LLMSource).model, log)
  pipe = blocks.read(config, pipeline.InputConfig).for_run(batch_size=c.batch_size, max_len=d.max_len)
  loaded = {split: questions_lib.load(os.path.join(data_dir, schema.file_name("align", split)), pipe, tokenizer)
            for split in schema.SPLITS}
  (train, train_hist, language), (eval_, eval_hist, _) = loaded["train"], loaded["eval"]
  log(f"diagnose: {len(train)} align-train questions of {len(train_hist)} users, {len(eval_)} align-eval "
      f"questions of {len(eval_hist)} users")
  eval_path = os.path.join(data_dir, schema.file_name("align", "eval"))
  count_records, unanswered = ceiling.records(eval_, pipeline.SequenceSource(eval_path), tokenizer, language)
  model, params, _ = encoder_export.load(os.path.join(workdir, "pretrain", "export"))
  features = user_features(model, params, {**train_hist, **eval_hist}, c.batch_size, recent_states(config))
  probed = probe_lib.probe(train, eval_, features, language, c.probe)
  runs = {"ceiling": count_records, **{f"probe_{k}" if k != "probe" else k: v for k, v in probed["records"].items()}}
  out_dir = os.path.join(workdir, "diagnose")
  result = {"runs": {}, "probe_stems": probed["stems"], "ceiling_unanswered": dict(unanswered),
            **{f"probe_{k}": probed[k] for k in ("unprobed", "no_known_candidate", "unseen_answer")},
            "encoder": model.cfg.name, "recent_states": recent_states(config),
            "feature_width": int(next(iter(features.values())).size)}
  for name, records in runs.items():
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    scoring_path = os.path.join(out_dir, name, "predictions.jsonl")
    scoring.write_jsonl(scoring_path, records)
    result["runs"][name] = {"questions": len(records), "scores": _score(records, c.bootstrap_samples, config.seed)}
  # The probe against the majority answer where a probe can be right (the gold is a train answer).
  answerable = lambda rs: [r for r in rs if r["seen_answer"]]
  if answerable(probed["records"]["probe"]):
    result["probe_vs_majority"] = paired.compare(answerable(probed["records"]["probe"]),
                                                  answerable(probed["records"]["majority"]),
                                                  "official", samples=c.bootstrap_samples, seed=config.seed)
  for line in diagnosis_lib.summary(result):
    log(line)
  log(f"diagnose: done in {time.time() - start:.0f}s")
  return result
