"""Stage 3: ask the aligned model every align-eval question, write predictions, score them.

The aligned model is `workdir/align/export` (`soft_prompt.export.load`: every tensor and both sources
checked). Runs (`evaluate.runs`, `choices.EVAL_RUNS`), each written to
`workdir/evaluate/<run>/predictions.jsonl` (official format: `question`, `prediction`,
`answer`; plus `task`, `user`, `prompt_tokens`, `ranked_prediction` where candidates are
listed, `answer_nll` with `evaluate.answer_nll`) and scored into
`workdir/evaluate/<run>/result.json`:
  aligned        the user's own soft prompt through the trained adapter (whatever `align.user`
                 trained: the encoder, or the `zeros` / `random_encoder` control)
  shuffled_user  the same trained model, each user's questions asked with another user's soft
                 prompt (one random cycle over users: never their own); free, evaluation only
  text20/text50  no encoder: the last 20 / 50 clicked titles written into the question,
                 decoded from the title tokens; answered by the LLM before alignment
                 (`evaluate.text_llm='base'`, zero-shot as in the paper) or the aligned one
  floor          `floor_constant`: each task's best constant answer under the official rule,
                 chosen on the align-train golds; `floor_first_candidate`: the first listed
                 candidate (IP, AP)
Answers are decoded greedily with the KV cache until the end-of-turn token or
`evaluate.max_new_tokens`, in batches of prompts sorted by length so each prompt bucket compiles
once; golds longer than `max_new_tokens` tokens (which no answer can match) are counted per
task in a warning and in each run's result. `ranked` (for questions listing candidates): each candidate's answer tokens are scored
after the same prompt (`Generator.continuation_nll`) and the lowest NLL per token is the
ranked prediction. `answer_nll` (every question): the gold answer's NLL per token after the
run's prompt, on the same cached prefill; the report pairs `aligned` with `shuffled_user`
question by question (the answer log-likelihood diagnostic, more sensitive than accuracy).
A finished run is reused when the stage resumes.
"""

import os
import time

import numpy as np

from uqa_jax.config import blocks
from uqa_jax.config import choices
from uqa_jax.config.recipes import EvaluateConfig
from uqa_jax.evaluation import evaluator as evaluator_lib
from uqa_jax.evaluation import scoring
from uqa_jax.runtime import atomic
from uqa_jax.runtime import workdir as workdir_lib

BLOCKS = ("evaluate",)
UPSTREAM = ("align",)
VERSION = 1  # of what it computes; the rule for bumping it: uqa_jax/stages/__init__.py



def fingerprint(config) -> dict:
  e = blocks.read(config, EvaluateConfig)
  unused = () if any(r in choices.TEXT_CLICKS for r in e.runs) else ("text_llm",)
  unused += ("top_p",) if e.temperature == 0 else ()
  return {"evaluate": {k: v for k, v in blocks.fingerprint(e).items() if k not in unused}}


def run(config, workdir: str, log=print) -> dict:
  e = blocks.read(config, EvaluateConfig)
  out_dir = os.path.join(workdir, "evaluate")
  names = evaluator_lib.run_names(e)
  todo = [r for r in names if not os.path.exists(os.path.join(out_dir, r, workdir_lib.RESULT))]
  cost_path = os.path.join(out_dir, workdir_lib.EVAL_COST)
  need_cost = e.prompt_cost and not os.path.exists(cost_path)
  evaluator = evaluator_lib.Evaluator(config, workdir, log) if todo or need_cost else None
  if need_cost:
    atomic.write_json(cost_path, evaluator.cost())
  summary = {}
  for name in names:
    run_dir = os.path.join(out_dir, name)
    path = os.path.join(run_dir, workdir_lib.RESULT)
    if name not in todo:
      log(f"evaluate[{name}]: reusing {path}")
      result = atomic.read_json(path)
    else:
      os.makedirs(run_dir, exist_ok=True)
      start = time.time()
      records, cost = evaluator.run(name)
      scoring.write_jsonl(os.path.join(run_dir, "predictions.jsonl"), records)
      log(f"evaluate[{name}]: {len(records)} predictions written; scoring them ({e.bootstrap_samples} bootstrap samples)")
      tokens = [r["prompt_tokens"] for r in records if "prompt_tokens" in r]
      result = {**evaluator_lib.describe(config, name), "questions": len(records), "seconds": time.time() - start,
                "golds_longer_than_max_new_tokens": evaluator.unreachable,
                "scores": evaluator_lib.score_all(records, e.bootstrap_samples, config.seed),
                "prompt_tokens_mean": float(np.mean(tokens)) if tokens else None, **cost}
      atomic.write_json(path, result)
    summary[name] = {v: s["cells"].get("overall") for v, s in result["scores"].items()}
    log(f"evaluate[{name}]: " + "; ".join(
        f"{v} {c['accuracy']:.1%} [{c['ci'][0]:.1%}, {c['ci'][1]:.1%}] of {c['n']}"
        for v, c in summary[name].items() if c) + f" ({result['questions']} questions)")
  shapes = None if evaluator is None else evaluator.shapes()
  return {"runs": summary, "cost": atomic.read_json(cost_path) if e.prompt_cost else None,
          **({"shapes": shapes} if shapes else {})}
