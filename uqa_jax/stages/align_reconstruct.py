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

import os

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import pipeline
from uqa_jax.data import reconstruct
from uqa_jax.data import schema
from uqa_jax.stages import train_loop

# what the encoder reads of a row: rolled together, a row gets another row's whole history
USER_INPUTS = (*schema.FEATURE_COLUMNS, "lengths", "timestamps")


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
  mixed = (f"; then every {a.reconstruct_every}th of the {qa_steps} QA steps is a reconstruction batch (the LLM "
           "learns from it too)" if a.reconstruct_every else "")
  return (f"align: reconstruction pre-alignment: the first {a.reconstruct_steps} steps write out the last "
          f"{a.reconstruct_clicks} clicks' {'/'.join(a.reconstruct_fields)} of an align-train history prefix, LLM "
          f"frozen, adapter at {a.reconstruct_learning_rate:g}" + mixed)


def _rolled(batch: dict) -> dict:
  return {k: jnp.roll(v, 1, axis=0) if k in USER_INPUTS else v for k, v in batch.items()}


def evaluate(prog, params, data_dir: str) -> dict:
  """Reconstruction NLL per answer token on the align-eval rows, own history and rolled (above)."""
  path = os.path.join(data_dir, schema.file_name("align", "eval"))
  sums = {"own": 0.0, "rolled": 0.0, "tokens": 0.0, "rows": 0, "same": 0}

  def rows(batch):
    own, count, _, valid = prog.eval_nll(params, batch)
    rolled_batch = _rolled(batch)
    rolled, _, _, _ = prog.eval_nll(params, rolled_batch)
    items = batch[schema.ITEM_COLUMN]
    same = jnp.all(items == rolled_batch[schema.ITEM_COLUMN], axis=1) & (batch["lengths"] == rolled_batch["lengths"])
    return own, rolled, count, valid & jnp.roll(valid, 1), same

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
