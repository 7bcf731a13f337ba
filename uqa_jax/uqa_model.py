"""Stage 2's model: the user encoder's states -> adapter -> soft tokens spliced into the LLM.

Parameters are `{"encoder": ..., "adapter": ..., "llm": ...}`. The adapter reads the encoder's
hidden states (before the NIP head's projection, as the official code does). The loss is the
mean next-token cross-entropy over the batch's `loss_mask` tokens (the answer and the chat
delimiters after it); soft tokens are never predicted. `user` is the built-in control switch:
"zeros" feeds zeros through the same adapter in every path that calls `soft_tokens` (training
and evaluation alike), so a run can learn a constant prompt but nothing about the user;
"random_encoder" is the same path as "encoder" with the parameters of an untrained encoder
(the stage supplies them).
Shape letters: B batch, L history, D encoder width, K soft tokens, T chat tokens, S = T + K, V vocab.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from uqa_jax import choices
from uqa_jax import splice
from uqa_jax.llm import model as llm_model

USERS = choices.ALIGN_USERS  # encoder, zeros, random_encoder


@dataclasses.dataclass(frozen=True)
class UQAModel:
  encoder: Any  # encoders.user_model.UserModel
  adapter: Any  # an adapters.<name>.Model
  llm: Any  # llm.model.Decoder
  place: str = "prefix"  # splice.PLACES
  user: str = "encoder"  # USERS

  def __post_init__(self):
    if self.place not in splice.PLACES:
      raise ValueError(f"align.place={self.place!r}; expected one of {', '.join(splice.PLACES)}")
    if self.user not in USERS:
      raise ValueError(f"align.user={self.user!r}; expected one of {', '.join(USERS)}")

  def soft_tokens(self, params, batch):
    """[B, K, M] float32 soft tokens of the batch's histories (zeros in, for the `zeros` control)."""
    states_BxLxD, _, mask_BxL = self.encoder.apply({"params": params["encoder"]}, batch)
    if self.user == "zeros":
      states_BxLxD = jnp.zeros_like(states_BxLxD)
    return self.adapter.apply({"params": params["adapter"]}, states_BxLxD, mask_BxL)

  def spliced(self, params, batch):
    """(input embeddings [B, S, M], attention mask [B, S], token ids [B, S], loss mask [B, S])."""
    soft_BxKxM = self.soft_tokens(params, batch)
    k = soft_BxKxM.shape[1]
    mask_BxT = batch["attention_mask"]
    at_B = splice.prefix_index(mask_BxT) if self.place == "prefix" else batch["question_at"]
    embeds_BxTxM = self.llm.apply({"params": params["llm"]}, batch["input_ids"], method="embed")
    return (splice.splice_embeds(embeds_BxTxM, soft_BxKxM, at_B),
            splice.splice_values(mask_BxT, at_B, k, 1),
            splice.splice_values(batch["input_ids"], at_B, k, 0),
            splice.splice_values(batch["loss_mask"], at_B, k, 0))

  def logits(self, params, batch):
    embeds, mask, ids, loss_mask = self.spliced(params, batch)
    logits_BxSxV, _ = self.llm.apply({"params": params["llm"]}, embeds=embeds,
                                     positions=llm_model.positions_from_mask(mask), kv_mask=mask)
    return logits_BxSxV, ids, loss_mask


def answer_nll(params, batch, *, model: UQAModel):
  """Per row: (summed cross-entropy of its `loss_mask` tokens [B], their count [B]), float32.

  Each token is predicted from the position before it; rows that only pad an eval batch
  (`valid` False) count nothing.
  """
  logits_BxSxV, ids_BxS, loss_mask_BxS = model.logits(params, batch)
  logp = jax.nn.log_softmax(logits_BxSxV[:, :-1].astype(jnp.float32), axis=-1)
  nll_BxS = -jnp.take_along_axis(logp, ids_BxS[:, 1:, None], axis=-1)[..., 0]
  weights_BxS = loss_mask_BxS[:, 1:].astype(jnp.float32)
  if "valid" in batch:
    weights_BxS = weights_BxS * batch["valid"][:, None].astype(jnp.float32)
  return jnp.sum(nll_BxS * weights_BxS, axis=1), jnp.sum(weights_BxS, axis=1)


def answer_loss(params, batch, *, model: UQAModel):
  """Mean cross-entropy over every `loss_mask` token of the batch."""
  nll_B, count_B = answer_nll(params, batch, model=model)
  return jnp.sum(nll_B) / jnp.maximum(jnp.sum(count_B), 1.0)
