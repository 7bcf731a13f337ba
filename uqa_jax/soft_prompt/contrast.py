"""Another user's history in the same batch: the rolled batch, and a contrastive term that asks
the gold answer to be likelier with the own history than with the neighbour's.

`rolled_users(batch)` gives each row the history of the row before it (row 0 the last's): the
question, the answer and every token of the chat stay. Stage 2's eval uses it for the
reconstruction NLL with another history (`program.eval_rolled`); `align.contrast_weight` = w > 0
adds, to the answer loss of every training batch,

  w * mean over contrasted rows of softplus(own - rolled),

own / rolled the row's answer NLL per token with its own / the neighbour's soft tokens: the
logistic loss of ranking the own user above another on the same answer (for a row whose
neighbour holds the very same history, or pads, there is nothing to contrast: left out). It
costs a second forward and backward pass per step. On a user the soft tokens do not depend on
(the `zeros` control) both NLLs are the same computation, so the term is log 2 with no gradient.
`same_history` compares the clicks only: two rows of one user cut at different clicks (two of
its questions, or reconstruction prefixes) count as different users; with one row a batch has
nothing to contrast.
Shape letters as in `soft_prompt/model.py`.
"""

import jax
import jax.numpy as jnp

from uqa_jax.data import schema
from uqa_jax.soft_prompt import model as uqa_model

# what the encoder (or the oracle's title reader) reads of a row: rolled together, a row gets
# another row's whole history
USER_INPUTS = (*schema.FEATURE_COLUMNS, "lengths", "timestamps")


def rolled_users(batch: dict) -> dict:
  """The batch with each row's history replaced by the row before it's (row 0 gets the last's)."""
  return {k: jnp.roll(v, 1, axis=0) if k in USER_INPUTS else v for k, v in batch.items()}


def same_history(batch: dict, rolled: dict):
  """[B] whether a row's rolled history is its own (the same clicks, e.g. two questions of one user)."""
  item = schema.ITEM_COLUMN
  return jnp.all(batch[item] == rolled[item], axis=1) & (batch["lengths"] == rolled["lengths"])


def gaps(params, batch, *, model: uqa_model.UQAModel):
  """Each row's summed answer NLL with its own history and with the previous row's:
  (own [B], rolled [B], token count [B], valid [B]: the row and the one before it real,
  same [B]: the two histories equal). Stage 2's rolled eval and the contrastive term both read it."""
  own_B, count_B = uqa_model.answer_nll(params, batch, model=model)
  rolled = rolled_users(batch)
  rolled_B, _ = uqa_model.answer_nll(params, rolled, model=model)
  valid_B = batch["valid"] if "valid" in batch else jnp.ones_like(count_B, bool)
  return own_B, rolled_B, count_B, valid_B & jnp.roll(valid_B, 1), same_history(batch, rolled)


def contrasted(count_B, valid_B, same_B):
  """[B] the rows the term compares: both rows real, with answer tokens, the histories different."""
  return valid_B & (count_B > 0) & ~same_B


def contrastive_loss(params, batch, *, model: uqa_model.UQAModel, weight: float):
  """The mean answer cross-entropy (as `uqa_model.answer_loss`) + weight * the mean over the
  contrasted rows of softplus(own - rolled), per-token NLLs (0 when no row is contrasted)."""
  own_B, rolled_B, count_B, valid_B, same_B = gaps(params, batch, model=model)
  on_B = contrasted(count_B, valid_B, same_B)
  answer = jnp.sum(own_B) / jnp.maximum(jnp.sum(count_B), 1.0)
  per_token = lambda nll_B: nll_B / jnp.maximum(count_B, 1.0)
  term_B = jax.nn.softplus(per_token(own_B) - per_token(rolled_B))
  n = jnp.sum(on_B)
  return answer + weight * jnp.sum(jnp.where(on_B, term_B, 0.0)) / jnp.maximum(n, 1)
