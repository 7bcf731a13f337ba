"""Splicing soft tokens into a batch of token embeddings, with the masks that go with them.

Soft tokens [B, K, M] enter row b's token embeddings [B, T, M] at index `at[b]`: tokens before
it keep their places, the soft tokens take `at[b] .. at[b] + K - 1`, the rest move K to the
right; every per-token array (attention mask, loss mask) is spliced the same way, with a fixed
value at the soft positions (attention 1, loss 0: the loss never covers a soft token).
Where to splice:
  prefix       the row's first valid token (position 0 of the real sequence, as the official
               code does; after the left padding of a left-padded batch)
  placeholder  an index per row the caller found (e.g. where a marker stood in the user turn)
Positions then follow from the spliced attention mask (`llm.model.positions_from_mask`).
Shape letters: B batch, T tokens, K soft tokens, M LLM width, S = T + K.
"""

import jax.numpy as jnp

from uqa_jax.config import choices

PLACES = choices.SPLICE_PLACES  # prefix, placeholder


def prefix_index(mask_BxT):
  """The index of each row's first valid token (0 for a row with none)."""
  return jnp.argmax(mask_BxT.astype(bool), axis=1).astype(jnp.int32)


def _sources(at_B, num_tokens: int, num_soft: int):
  """Per output position: whether it is soft, and the token / soft index it copies."""
  j_1xS = jnp.arange(num_tokens + num_soft)[None, :]
  at_Bx1 = at_B[:, None]
  is_soft_BxS = (j_1xS >= at_Bx1) & (j_1xS < at_Bx1 + num_soft)
  token_BxS = jnp.clip(jnp.where(j_1xS < at_Bx1, j_1xS, j_1xS - num_soft), 0, num_tokens - 1)
  soft_BxS = jnp.clip(j_1xS - at_Bx1, 0, num_soft - 1)
  return is_soft_BxS, token_BxS, soft_BxS


def splice_embeds(embeds_BxTxM, soft_BxKxM, at_B):
  """[B, T + K, M]: the soft tokens inserted at `at`."""
  is_soft, token, soft = _sources(at_B, embeds_BxTxM.shape[1], soft_BxKxM.shape[1])
  from_tokens = jnp.take_along_axis(embeds_BxTxM, token[..., None], axis=1)
  from_soft = jnp.take_along_axis(soft_BxKxM.astype(embeds_BxTxM.dtype), soft[..., None], axis=1)
  return jnp.where(is_soft[..., None], from_soft, from_tokens)


def splice_values(values_BxT, at_B, num_soft: int, soft_value):
  """[B, T + K]: a per-token array spliced like the embeddings, `soft_value` at soft positions."""
  is_soft, token, _ = _sources(at_B, values_BxT.shape[1], num_soft)
  return jnp.where(is_soft, jnp.asarray(soft_value, values_BxT.dtype),
                   jnp.take_along_axis(values_BxT, token, axis=1))
