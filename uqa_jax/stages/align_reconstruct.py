"""Stage 2's reconstruction pre-alignment: its batches in the run, and its eval.

The rows are `data/reconstruct.py`'s; the phases' learning rates are `soft_prompt/optimizer.py`'s
(`align.reconstruct_*`). What a run reports, before and after training, on the align-eval file's
rows each cut to a seeded prefix (never trained on: Stage 2 reads the train file):
  reconstruction_nll          answer NLL per token of the written-out clicks, own history
  reconstruction_nll_rolled   the same answers with the history of the row before it in a seeded
                              shuffled order (another user's, but for the few rows whose neighbour
                              is another question of the same user, cut elsewhere); rows whose
                              neighbour has the very same history are left out of both
                              (`reconstruction_rows`: the rows compared)
Own below rolled says the soft tokens carry the clicks to the LLM; both equal says the LLM answers
from the question and its priors alone.
"""

import json
import os

import numpy as np

from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import reconstruct
from uqa_jax.data import schema
from uqa_jax.stages import train_loop


def task(a: AlignConfig) -> reconstruct.Task:
  return reconstruct.Task(clicks=a.reconstruct_clicks, fields=tuple(a.reconstruct_fields))


def batches(a: AlignConfig, qa: pipeline.Batches, path: str, pipe: pipeline.InputConfig, tokenizer):
  """The run's batches: `qa` alone, or mixed with reconstruction rows of the file at `path`."""
  if not a.reconstructs():
    return qa
  rows = pipeline.make_dataset(path, pipe, tokenizer=tokenizer, reconstruct=task(a))
  return reconstruct.Mixed(qa, rows, first=a.reconstruct_steps, every=a.reconstruct_every)


def describe(a: AlignConfig, qa_steps: int) -> str:
  """One line on what the run's reconstruction batches are."""
  what = (f"write out the last {a.reconstruct_clicks} clicks' {'/'.join(a.reconstruct_fields)} of an align-train "
          "history prefix")
  first = (f"the first {a.reconstruct_steps} steps {what}, LLM frozen, adapter at {a.reconstruct_learning_rate:g}"
           if a.reconstruct_steps else "")
  mixed = (f"every {a.reconstruct_every}-th of the {qa_steps} QA steps is a reconstruction batch "
           f"({qa_steps // a.reconstruct_every}; the LLM of a full fine-tune learns from them too)"
           if a.reconstruct_every else "")
  if not first:
    mixed += f": they {what}"
  return "align: reconstruction rows: " + "; then ".join(x for x in (first, mixed) if x)


def survey(a: AlignConfig, path: str, pipe: pipeline.InputConfig, tokenizer, rows: int = 256) -> str:
  """One line: of `rows` reconstruction examples drawn as training draws them (the first rows of
  the file at the first stream positions), how many ask for fewer than `reconstruct_clicks` clicks
  and why (a shorter history, or the answer cut to fit `input.max_answer_len` / `max_text_len`)."""
  source = pipeline.SequenceSource(path)
  chat = chat_lib.ChatTokenizer(tokenizer, pipe.max_text_len, pipe.system_prompt, pipe.max_answer_len)
  rows = min(rows, len(source))
  draw = reconstruct.Reconstruct(source, chat, task=task(a), seed=pipe.seed, language=source.language)
  tag = reconstruct.tag(len(source))
  short = cut = 0
  for position in range(rows):
    out = draw.map(tag(position, position))
    asked = json.loads(out[schema.TEXT_COLUMN])[-1]["content"].count("\n") + 1
    steps = out[schema.ITEM_COLUMN].num_steps
    short += asked < a.reconstruct_clicks and steps < a.reconstruct_clicks
    cut += asked < min(a.reconstruct_clicks, steps)
  return (f"align: of {rows} reconstruction examples, {short + cut} ask for fewer than {a.reconstruct_clicks} clicks "
          f"({short} with a shorter history, {cut} cut to fit input.max_answer_len={pipe.max_answer_len} / "
          f"max_text_len={pipe.max_text_len})")


def evaluate(prog, params, data_dir: str) -> dict:
  """Reconstruction NLL per answer token on the align-eval rows, own history and rolled (above)."""
  path = os.path.join(data_dir, schema.file_name("align", "eval"))
  sums = {"own": 0.0, "rolled": 0.0, "tokens": 0.0, "rows": 0, "same": 0}

  rows = lambda batch: prog.eval_rolled(params, batch)
  for own, rolled, count, valid, same in train_loop.eval_batches(rows, path, prog.pipe, prog.batch_sharding,
                                                                 tokenizer=prog.tokenizer, reconstruct=task(prog.cfg)):
    keep = np.asarray(valid) & ~np.asarray(same)
    sums["same"] += int((np.asarray(valid) & np.asarray(same)).sum())
    sums["own"] += float(np.asarray(own, np.float64)[keep].sum())
    sums["rolled"] += float(np.asarray(rolled, np.float64)[keep].sum())
    sums["tokens"] += float(np.asarray(count, np.float64)[keep].sum())
    sums["rows"] += int(keep.sum())
  if not sums["rows"]:
    raise ValueError(f"{path}: no two neighbouring rows with different histories to compare the reconstruction on")
  out = {"reconstruction_nll": sums["own"] / sums["tokens"], "reconstruction_nll_rolled": sums["rolled"] / sums["tokens"],
         "reconstruction_rows": sums["rows"], "reconstruction_rows_same_history": sums["same"]}
  if not all(np.isfinite(v) for v in out.values()):
    raise FloatingPointError(f"align: reconstruction eval is not finite: {out} ({path})")
  return out
