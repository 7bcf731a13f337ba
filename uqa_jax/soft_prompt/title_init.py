"""`align.adapter_init="titles"`: the data half of the title fit (`adapters/title_fit.py` is the math).

It runs the frozen encoder over align-train rows and pairs each valid click's state with the
mean LLM embedding of its title (`model.title_states`), then fits the adapter's token map.
"""

import dataclasses
import hashlib

import jax
import numpy as np

from uqa_jax.adapters import title_fit
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import pipeline
from uqa_jax.soft_prompt import model as uqa_model

TITLE_FIT_HELDOUT_USERS = 64  # users after the fitted rows whose clicks measure the fit out of sample


def fit_to_titles(a: AlignConfig, model, encoder_params, adapter_params, embedding_VxM, path: str,
                  pipe: pipeline.InputConfig, tokenizer) -> tuple[dict, dict]:
  """(adapter params with `proj` fitted, what the fit saw): `adapters/title_fit.py` on the
  states of the first `align.title_fit_rows` rows of the align-train file `path`, in file order
  (all zero for the `zeros` control, whose adapter never sees a state), every valid click.

  A user asked several questions has several rows with one history: the fit counts its clicks
  once per row. Reported: R² on the fitted clicks, the distinct users they come from, and the R²
  of the same map on one row each of the next `TITLE_FIT_HELDOUT_USERS` users not fitted on."""
  title_fit.check(adapter_params)  # before any work
  pipe = dataclasses.replace(pipe, shuffle=False, num_epochs=1, drop_remainder=False, length_window=0, widths=(), workers=0)
  # one executable: the encoder's states [B, L, D] and the clicks' mean title embeddings [B, L, M]
  states_and_titles = jax.jit(lambda p, e, b: (model.encoder.apply({"params": p}, b), uqa_model.title_states(e, b)[0]))
  fit, held, rows, fit_users, held_users = ([], []), ([], []), 0, set(), set()
  for batch in pipeline.make_dataset(path, pipe, tokenizer=tokenizer, process_index=0, process_count=1):
    encoded, title_BxLxM = states_and_titles(encoder_params, embedding_VxM, batch)
    states_BxLxD, _, mask_BxL = (np.asarray(x) for x in encoded)
    if a.user == "zeros":
      states_BxLxD = np.zeros_like(states_BxLxD)
    title_BxLxM = np.asarray(title_BxLxM)
    keep_BxL = mask_BxL.astype(bool) & batch["valid"][:, None]
    fitting = rows < a.title_fit_rows
    for b in np.flatnonzero(batch["valid"]):
      user = hashlib.sha1(np.asarray(batch[uqa_model.TITLE_COLUMN][b]).tobytes()).hexdigest()
      if fitting:
        fit_users.add(user)
      elif user in fit_users or user in held_users or len(held_users) >= TITLE_FIT_HELDOUT_USERS:
        continue
      else:
        held_users.add(user)
      into = fit if fitting else held
      into[0].append(states_BxLxD[b][keep_BxL[b]])
      into[1].append(title_BxLxM[b][keep_BxL[b]])
    rows += int(batch["valid"].sum()) if fitting else 0
    if not fitting and len(held_users) >= TITLE_FIT_HELDOUT_USERS:
      break
  kernel, bias, r2 = title_fit.ridge(np.concatenate(fit[0]), np.concatenate(fit[1]))
  out = {"r2": r2, "clicks": int(sum(len(x) for x in fit[0])), "rows": rows, "users": len(fit_users),
         "heldout_users": len(held_users)}
  if held_users:
    out["r2_heldout"] = title_fit.r2(np.concatenate(held[0]), np.concatenate(held[1]), kernel, bias)
  return title_fit.apply(adapter_params, kernel, bias), out
