"""Splicing: soft tokens land where configured in left-padded batches, never in the loss, and a
soft token equal to a real token's embedding gives exactly the logits of the token prompt."""

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.llm import model as model_lib
from uqa_jax.llm.config import LLMConfig
from uqa_jax.soft_prompt import splice

CFG = LLMConfig(vocab_size=50, d_model=32, d_ff=64, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, rope_theta=10000.0, rms_eps=1e-6, qkv_bias=True, tie_embeddings=True)


def _left_padded(lengths, length, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.zeros((len(lengths), length), np.int32)
  mask = np.zeros((len(lengths), length), np.int32)
  for b, n in enumerate(lengths):
    ids[b, length - n:] = rng.integers(1, CFG.vocab_size, n)
    mask[b, length - n:] = 1
  return ids, mask


def test_prefix_goes_after_the_left_padding_and_out_of_the_loss():
  ids, mask = _left_padded([5, 3, 6], 6)
  loss = mask.copy()
  at = splice.prefix_index(jnp.asarray(mask))
  np.testing.assert_array_equal(at, [1, 3, 0])
  soft = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4) + 100
  embeds = np.repeat(ids[..., None].astype(np.float32), 4, axis=-1)
  out = np.asarray(splice.splice_embeds(jnp.asarray(embeds), jnp.asarray(soft), at))
  att = np.asarray(splice.splice_values(jnp.asarray(mask), at, 2, 1))
  lm = np.asarray(splice.splice_values(jnp.asarray(loss), at, 2, 0))
  for b in range(3):  # by hand: pads, the soft tokens, then the row's tokens
    a = int(at[b])
    np.testing.assert_array_equal(out[b, a:a + 2], soft[b])
    np.testing.assert_array_equal(out[b, :a, 0], ids[b, :a])
    np.testing.assert_array_equal(out[b, a + 2:, 0], ids[b, a:])
    np.testing.assert_array_equal(att[b], np.r_[mask[b, :a], [1, 1], mask[b, a:]])
    np.testing.assert_array_equal(lm[b], np.r_[loss[b, :a], [0, 0], loss[b, a:]])


def test_a_soft_token_equal_to_a_token_embedding_gives_the_token_prompts_logits():
  """Remove one real token per row (at a different place in each row), splice its embedding back
  in as a soft token at that place: the LLM's logits must equal those of the untouched prompt."""
  ids, mask = _left_padded([7, 4, 6], 8, seed=1)
  model = model_lib.Decoder(CFG)
  positions = model_lib.positions_from_mask(jnp.asarray(mask))
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(ids), positions=positions,
                      kv_mask=jnp.asarray(mask))["params"]
  want, _ = model.apply({"params": params}, jnp.asarray(ids), positions=positions, kv_mask=jnp.asarray(mask))
  cut = np.array([2, 5, 4])  # a valid position of each row (placeholder-style splice)
  reduced_ids = np.stack([np.delete(ids[b], cut[b]) for b in range(3)])
  reduced_mask = np.stack([np.delete(mask[b], cut[b]) for b in range(3)])
  soft = model.apply({"params": params}, jnp.asarray(ids[np.arange(3), cut])[:, None], method="embed")
  embeds = model.apply({"params": params}, jnp.asarray(reduced_ids), method="embed")
  spliced = splice.splice_embeds(embeds, soft, jnp.asarray(cut))
  spliced_mask = splice.splice_values(jnp.asarray(reduced_mask), jnp.asarray(cut), 1, 1)
  np.testing.assert_array_equal(spliced_mask, mask)
  got, _ = model.apply({"params": params}, embeds=spliced, positions=model_lib.positions_from_mask(spliced_mask),
                       kv_mask=spliced_mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], rtol=1e-5, atol=1e-5)
