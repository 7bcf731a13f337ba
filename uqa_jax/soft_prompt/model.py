"""Stage 2's model: the user encoder's states -> adapter -> soft tokens spliced into the LLM.

Parameters are `{"encoder": ..., "adapter": ..., "llm": ...}`. The adapter reads the encoder's
hidden states (before the NIP head's projection, as the official code does). The loss is the
mean next-token cross-entropy over the batch's `loss_mask` tokens (the answer and the chat
delimiters after it); soft tokens are never predicted. `user` is the built-in control switch:
"zeros" feeds zeros through the same adapter in every path that calls `soft_tokens` (training
and evaluation alike), so a run can learn a constant prompt but nothing about the user;
"random_encoder" is the same path as "encoder" with the parameters of an untrained encoder
(the stage supplies them); "oracle_titles" replaces the encoder's states by the mean of the LLM's
own (input, not trained through) token embeddings of each clicked item's title: information the
encoder should summarise, certainly present and already in the LLM's space, so a run that cannot
use it says the reader, not the encoder, is where user information is lost; "text20"/"text50"
have no soft tokens at all (K = 0: the pipeline writes the last clicked titles into the prompt).
Shape letters: B batch, L history, D encoder width, K soft tokens, T chat tokens, S = T + K, V vocab.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from uqa_jax import adapters
from uqa_jax.config import choices
from uqa_jax.data import schema
from uqa_jax.llm import model as llm_model
from uqa_jax.soft_prompt import splice

USERS = choices.ALIGN_USERS  # encoder, zeros, random_encoder, oracle_titles, text20, text50
TITLE_COLUMN = "uni_seq_title_bpe_token_ids"


def title_states(embedding_VxM, batch):
  """(states [B, L, M] float32, mask [B, L]): per click, the mean embedding of its title's tokens
  (id 0 pads a bag), with no gradient into the embedding table; the oracle reader's input."""
  if TITLE_COLUMN not in batch:
    raise ValueError(f"align.user={choices.ORACLE!r} needs the batch's {TITLE_COLUMN!r} (title tokens per click)")
  tokens_BxLxW = batch[TITLE_COLUMN]
  present_BxLxW = (tokens_BxLxW != schema.PAD_ID).astype(jnp.float32)
  table_VxM = jax.lax.stop_gradient(embedding_VxM).astype(jnp.float32)
  sums_BxLxM = jnp.einsum("blw,blwm->blm", present_BxLxW, table_VxM[tokens_BxLxW])
  states_BxLxM = sums_BxLxM / jnp.maximum(present_BxLxW.sum(-1, keepdims=True), 1.0)
  length = tokens_BxLxW.shape[1]
  mask_BxL = (jnp.arange(length)[None, :] < batch["lengths"][:, None]).astype(jnp.int32)
  return states_BxLxM * mask_BxL[..., None], mask_BxL


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

  @property
  def num_soft(self) -> int:
    """K: soft tokens per row (none for a text user, whose history is in the prompt as text)."""
    return 0 if self.user in choices.TEXT_CLICKS else adapters.num_tokens(self.adapter.cfg)

  @property
  def adapter_width(self) -> int:
    """The width of the states the adapter reads: the encoder's, or the LLM's for the oracle."""
    return self.llm.cfg.d_model if self.user == choices.ORACLE else self.encoder.cfg.d_model

  def soft_tokens(self, params, batch):
    """[B, K, M] float32 soft tokens of the batch's histories (zeros in, for the `zeros` control)."""
    if not self.num_soft:
      return jnp.zeros((batch["input_ids"].shape[0], 0, self.llm.cfg.d_model), jnp.float32)
    if self.user == choices.ORACLE:
      states_BxLxM, mask_BxL = title_states(params["llm"]["embedding"], batch)
      return self.adapter.apply({"params": params["adapter"]}, states_BxLxM, mask_BxL)
    states_BxLxD, _, mask_BxL = self.encoder.apply({"params": params["encoder"]}, batch)
    if self.user == "zeros":  # no state and no length: a mask would tell the Q-Former how long the history is
      states_BxLxD, mask_BxL = jnp.zeros_like(states_BxLxD), jnp.ones_like(mask_BxL)
    return self.adapter.apply({"params": params["adapter"]}, states_BxLxD, mask_BxL)

  def splice_at(self, batch):
    """[B] index where each row's soft tokens go: first valid token, or the question's first token."""
    if self.place == "prefix":
      return splice.prefix_index(batch["attention_mask"])
    if "question_at" not in batch:
      raise ValueError("align.place='placeholder' needs batch['question_at'] (the index of each row's "
                       "question; the pipeline's align batches carry it)")
    return batch["question_at"]

  def spliced(self, params, batch):
    """(input embeddings [B, S, M], attention mask [B, S], token ids [B, S], loss mask [B, S])."""
    soft_BxKxM = self.soft_tokens(params, batch)
    k = soft_BxKxM.shape[1]
    embeds_BxTxM = self.llm.apply({"params": params["llm"]}, batch["input_ids"], method="embed")
    if not k:
      return embeds_BxTxM, batch["attention_mask"], batch["input_ids"], batch["loss_mask"]
    at_B = self.splice_at(batch)
    return (splice.splice_embeds(embeds_BxTxM, soft_BxKxM, at_B),
            splice.splice_values(batch["attention_mask"], at_B, k, 1),
            splice.splice_values(batch["input_ids"], at_B, k, 0),
            splice.splice_values(batch["loss_mask"], at_B, k, 0))

  def logits(self, params, batch, logits_at=None):
    """(logits [B, S, V] (or [B, A, V] at `logits_at` [B, A] spliced positions), ids, loss mask)."""
    embeds, mask, ids, loss_mask = self.spliced(params, batch)
    logits, _ = self.llm.apply({"params": params["llm"]}, embeds=embeds,
                               positions=llm_model.positions_from_mask(mask), kv_mask=mask, logits_at=logits_at)
    return logits, ids, loss_mask


def _nll(logits_NxV, targets_N):
  logp = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets_N[..., None], axis=-1)[..., 0]


def answer_nll(params, batch, *, model: UQAModel):
  """Per row: (summed cross-entropy of its `loss_mask` tokens [B], their count [B]), float32.

  Each token is predicted from the position before it; rows that only pad an eval batch
  (`valid` False) count nothing. With the pipeline's `answer_at` [B, A] (the loss tokens'
  indices, -1 after them) logits are computed at those A positions only; without it, at every
  position (the reference path; both give the same numbers).
  """
  if "answer_at" in batch:
    t_BxA = batch["answer_at"]
    weights_BxA = (t_BxA >= 0).astype(jnp.float32)
    t_BxA = jnp.maximum(t_BxA, 0)
    k = model.num_soft
    spliced_BxA = t_BxA + k * (t_BxA >= model.splice_at(batch)[:, None])  # where token t sits after splicing
    logits_BxAxV, _, _ = model.logits(params, batch, logits_at=spliced_BxA - 1)
    nll_BxA = _nll(logits_BxAxV, jnp.take_along_axis(batch["input_ids"], t_BxA, axis=1))
  else:
    logits_BxSxV, ids_BxS, loss_mask_BxS = model.logits(params, batch)
    nll_BxA = _nll(logits_BxSxV[:, :-1], ids_BxS[:, 1:])
    weights_BxA = loss_mask_BxS[:, 1:].astype(jnp.float32)
  if "valid" in batch:
    weights_BxA = weights_BxA * batch["valid"][:, None].astype(jnp.float32)
  return jnp.sum(nll_BxA * weights_BxA, axis=1), jnp.sum(weights_BxA, axis=1)


def answer_loss(params, batch, *, model: UQAModel):
  """Mean cross-entropy over every `loss_mask` token of the batch."""
  nll_B, count_B = answer_nll(params, batch, model=model)
  return jnp.sum(nll_B) / jnp.maximum(jnp.sum(count_B), 1.0)
