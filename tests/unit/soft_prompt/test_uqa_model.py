"""The Stage 2 model: the answer loss equals a by-hand computation on concatenated embeddings,
and the `zeros` control ignores the user while the real one does not."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax import adapters
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.llm import model as llm_model
from uqa_jax.soft_prompt import model as uqa_model
from tests.unit.soft_prompt.test_splice import CFG as LLM_CFG
from tests.unit.encoders.test_user_model import DIMS, VOCAB, _batch


@functools.lru_cache(maxsize=None)
def _parts(name="mean"):
  """Encoder, adapter, LLM, their params and a batch: built once, shared by every control."""
  encoder = UserModel(EncoderConfig(name="trmpp", d_model=16, num_layers=1, num_heads=2, dropout=0.0),
                      VOCAB, DIMS)
  adapter = adapters.get(name)(AdapterConfig(name=name, d_llm=LLM_CFG.d_model, embed_rms=0.5))
  llm = llm_model.Decoder(LLM_CFG)
  batch = _batch()
  rng = np.random.default_rng(0)
  t = 9
  batch["input_ids"] = rng.integers(1, LLM_CFG.vocab_size, size=(2, t)).astype(np.int32)
  batch["attention_mask"] = np.array([[1] * 9, [1] * 6 + [0] * 3], np.int32)  # right-padded, as the pipeline
  batch["loss_mask"] = np.array([[0] * 5 + [1] * 4, [0] * 3 + [1] * 3 + [0] * 3], np.int32)
  # jitted: one compilation each instead of op-by-op dispatch (the tier's time)
  enc_params = jax.jit(encoder.init)(jax.random.PRNGKey(0), batch)["params"]
  states, _, mask = jax.jit(encoder.apply)({"params": enc_params}, batch)
  ids, kv_mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
  params = {"encoder": enc_params,
            "adapter": jax.jit(adapter.init)(jax.random.PRNGKey(1), states, mask)["params"],
            "llm": jax.jit(lambda r: llm.init(r, ids, positions=llm_model.positions_from_mask(kv_mask),
                                              kv_mask=kv_mask))(jax.random.PRNGKey(2))["params"]}
  return encoder, adapter, llm, params, batch


def _setup(user="encoder"):
  encoder, adapter, llm, params, batch = _parts()
  return uqa_model.UQAModel(encoder, adapter, llm, user=user), params, dict(batch)


def test_answer_loss_equals_a_by_hand_prefix_computation():
  """Prefix splice on right-padded rows = [soft, tokens]; loss = mean NLL of the loss-mask tokens."""
  model, params, batch = _setup()
  got = float(uqa_model.answer_loss(params, batch, model=model))
  soft = model.soft_tokens(params, batch)
  embeds = model.llm.apply({"params": params["llm"]}, jnp.asarray(batch["input_ids"]), method="embed")
  x = jnp.concatenate([soft, embeds], axis=1)
  mask = np.concatenate([np.ones((2, 1), np.int32), batch["attention_mask"]], axis=1)
  logits, _ = model.llm.apply({"params": params["llm"]}, embeds=x, positions=jnp.asarray(np.cumsum(mask, 1) - 1),
                              kv_mask=jnp.asarray(mask))
  logits = np.asarray(logits, np.float64)
  nll = []
  for b in range(2):
    for t in np.flatnonzero(batch["loss_mask"][b]):  # token t sits at spliced position t + 1
      row = logits[b, t]  # predicted from the position before it
      lse = np.log(np.exp(row - row.max()).sum()) + row.max()
      nll.append(lse - row[batch["input_ids"][b, t]])
  np.testing.assert_allclose(got, np.mean(nll), rtol=1e-5)


def test_placeholder_loss_equals_a_by_hand_insertion_before_the_question():
  """Soft token inserted at each row's `question_at`; the answer tokens after it move one place."""
  model, params, batch = _setup()
  model = uqa_model.UQAModel(model.encoder, model.adapter, model.llm, place="placeholder")
  batch["question_at"] = np.array([3, 2], np.int32)
  got = np.asarray(uqa_model.answer_nll(params, batch, model=model)[0], np.float64)
  soft = np.asarray(model.soft_tokens(params, batch))
  embeds = np.asarray(model.llm.apply({"params": params["llm"]}, jnp.asarray(batch["input_ids"]), method="embed"))
  for b in range(2):
    at = batch["question_at"][b]
    x = np.concatenate([embeds[b, :at], soft[b], embeds[b, at:]])[None]
    mask = np.concatenate([batch["attention_mask"][b, :at], [1], batch["attention_mask"][b, at:]])[None]
    logits, _ = model.llm.apply({"params": params["llm"]}, embeds=jnp.asarray(x),
                                positions=jnp.asarray(np.maximum(np.cumsum(mask, 1) - 1, 0)), kv_mask=jnp.asarray(mask))
    logits = np.asarray(logits, np.float64)[0]
    nll = 0.0
    for t in np.flatnonzero(batch["loss_mask"][b]):
      assert t >= at  # answers follow the question
      row = logits[t]  # token t sits at t + 1 after the insertion; predicted from t
      nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[batch["input_ids"][b, t]]
    np.testing.assert_allclose(got[b], nll, rtol=1e-5)


def test_a_text_user_has_no_soft_tokens_and_its_loss_is_the_plain_llms():
  """`text20`: the history is in the tokens; the loss is the LLM's own on them, by hand, in both paths."""
  model, params, batch = _setup("text20")
  assert model.num_soft == 0 and model.soft_tokens(params, batch).shape == (2, 0, LLM_CFG.d_model)
  logits, _ = model.llm.apply({"params": params["llm"]}, jnp.asarray(batch["input_ids"]),
                              positions=llm_model.positions_from_mask(jnp.asarray(batch["attention_mask"])),
                              kv_mask=jnp.asarray(batch["attention_mask"]))
  logits = np.asarray(logits, np.float64)
  want = []
  for b in range(2):
    nll = 0.0
    for t in np.flatnonzero(batch["loss_mask"][b]):
      row = logits[b, t - 1]
      nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[batch["input_ids"][b, t]]
    want.append(nll)
  np.testing.assert_allclose(np.asarray(uqa_model.answer_nll(params, batch, model=model)[0]), want, rtol=1e-5)
  answer_at = np.full((2, 4), -1, np.int32)
  for b in range(2):
    idx = np.flatnonzero(batch["loss_mask"][b])
    answer_at[b, :len(idx)] = idx
  fast = uqa_model.answer_nll(params, dict(batch, answer_at=answer_at), model=model)[0]
  np.testing.assert_allclose(np.asarray(fast), want, rtol=1e-5)


def test_zeros_control_ignores_the_user_the_real_path_does_not():
  other = _batch(seed=5)
  for user, moves in (("encoder", True), ("zeros", False)):
    model, params, batch = _setup(user)
    changed = dict(batch, **{k: other[k] for k in other})
    a = model.soft_tokens(params, batch)
    b = model.soft_tokens(params, changed)
    assert (not np.allclose(a, b)) == moves, user


def test_zeros_control_hides_the_history_length_from_the_qformer():
  """Zero states under the real mask would still tell the Q-Former's attention how many clicks
  there are; the control feeds an all-valid mask, so two users of different lengths look alike."""
  encoder, _, llm, params, batch = _parts()
  adapter = adapters.get("qformer")(AdapterConfig(name="qformer", d_llm=LLM_CFG.d_model, embed_rms=0.5,
                                                  num_queries=2, num_layers=1, d_model=16))
  states, _, mask = encoder.apply({"params": params["encoder"]}, batch)
  params = dict(params, adapter=adapter.init(jax.random.PRNGKey(3), states, mask)["params"])
  shorter = dict(batch, lengths=np.maximum(batch["lengths"] - 3, 1))
  for user, same in (("zeros", True), ("encoder", False)):
    model = uqa_model.UQAModel(encoder, adapter, llm, user=user)
    a, b = model.soft_tokens(params, batch), model.soft_tokens(params, shorter)
    assert np.array_equal(a, b) == same, user


def test_unknown_place_or_user_is_refused():
  model, _, _ = _setup()
  with pytest.raises(ValueError, match="align.user='shuffled'"):
    uqa_model.UQAModel(model.encoder, model.adapter, model.llm, user="shuffled")
  with pytest.raises(ValueError, match="align.place='suffix'"):
    uqa_model.UQAModel(model.encoder, model.adapter, model.llm, place="suffix")


@pytest.mark.parametrize("place", ["prefix", "placeholder"])
def test_extra_right_padding_does_not_change_the_answer_nll(place):
  """What `input.widths` cut (padding after every row, -1 answer slots) changes no number."""
  model, params, batch = _setup()
  model = uqa_model.UQAModel(model.encoder, model.adapter, model.llm, place=place)
  batch["question_at"] = np.array([3, 2], np.int32)
  answer_at = np.full((2, 4), -1, np.int32)
  for b in range(2):
    idx = np.flatnonzero(batch["loss_mask"][b])
    answer_at[b, :len(idx)] = idx
  padded = dict(batch, answer_at=np.pad(answer_at, ((0, 0), (0, 5)), constant_values=-1),
                **{k: np.pad(batch[k], ((0, 0), (0, 7))) for k in ("input_ids", "attention_mask", "loss_mask")})
  without_answer_at = lambda b: {k: v for k, v in b.items() if k != "answer_at"}
  for fast in (False, True):  # logits at the answer positions only, or at every position
    got = uqa_model.answer_nll(params, padded if fast else without_answer_at(padded), model=model)
    want = uqa_model.answer_nll(params, dict(batch, answer_at=answer_at) if fast else batch, model=model)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_the_rolled_eval_gives_each_row_the_previous_rows_history_by_hand():
  """Stage 2's reconstruction eval: each row's answer NLL with its own history and with the row
  before it's (here: the two rows swapped by hand, every encoder input, the chat kept); rows
  whose two histories are equal are flagged `same`, padding rows and their neighbours not `valid`."""
  from uqa_jax.soft_prompt import contrast
  model, params, batch = _setup()
  batch["valid"] = np.array([True, True])
  chat_keys = ("input_ids", "attention_mask", "loss_mask", "valid")
  swapped = {k: v if k in chat_keys else np.ascontiguousarray(v[::-1]) for k, v in batch.items()}
  own, rolled, count, valid, same = contrast.gaps(params, batch, model=model)
  want_own, want_count = uqa_model.answer_nll(params, batch, model=model)
  want_rolled, _ = uqa_model.answer_nll(params, swapped, model=model)
  np.testing.assert_allclose(own, want_own, rtol=1e-6)
  np.testing.assert_allclose(rolled, want_rolled, rtol=1e-6)
  np.testing.assert_array_equal(count, want_count)
  assert not np.allclose(own, rolled) and valid.tolist() == [True, True] and same.tolist() == [False, False]
  one_user = {k: v if k in chat_keys else np.stack([v[0], v[0]]) for k, v in batch.items()}
  one_user["valid"] = np.array([True, False])
  _, _, _, valid, same = contrast.gaps(params, one_user, model=model)
  assert same.tolist() == [True, True] and valid.tolist() == [False, False]


def test_the_contrastive_loss_by_hand_and_nothing_to_contrast_where_the_user_is_the_same():
  """`align.contrast_weight`: the answer loss + w * mean softplus(own - rolled per-token NLL) over
  the contrasted rows. Three rows with histories A, B, A: row r is scored with row r-1's history
  (by hand: A with A's is left out, B with A's, A with B's); a row with no answer token or not
  valid adds nothing. The term's gradient reaches the parameters; on the `zeros` control the
  term is log 2 with no gradient at all."""
  from uqa_jax.soft_prompt import contrast
  model, params, two = _setup()
  chat_keys = ("input_ids", "attention_mask", "loss_mask")
  rows = [0, 1, 0]
  batch = {k: np.stack([v[r] for r in rows]) for k, v in two.items() if k not in chat_keys}
  batch["valid"] = np.ones(3, bool)  # one key set for every variant below: one compilation each
  rng = np.random.default_rng(3)
  batch["input_ids"] = rng.integers(1, LLM_CFG.vocab_size, size=(3, 9)).astype(np.int32)
  batch["attention_mask"] = np.ones((3, 9), np.int32)
  batch["loss_mask"] = np.array([[0] * 5 + [1] * 4, [0] * 6 + [1] * 3, [0] * 4 + [1] * 5], np.int32)
  with_history = lambda r, h: {**{k: v[r:r + 1] for k, v in batch.items() if k in chat_keys + ("valid",)},
                               **{k: v[h:h + 1] for k, v in batch.items() if k not in chat_keys + ("valid",)}}
  nll_of = jax.jit(functools.partial(uqa_model.answer_nll, model=model))  # jitted: the tier's time
  nll = functools.lru_cache(maxsize=None)(lambda r, h: [float(x[0]) for x in nll_of(params, with_history(r, h))])
  loss = jax.jit(functools.partial(contrast.contrastive_loss, model=model, weight=0.7))

  def by_hand(weight, contrasted):
    own = [nll(r, r) for r in range(3)]
    answer = sum(n for n, _ in own) / sum(c for _, c in own)
    terms = [np.log1p(np.exp(own[r][0] / own[r][1] - nll(r, (r - 1) % 3)[0] / own[r][1])) for r in contrasted]
    return answer + weight * (np.mean(terms) if terms else 0.0)

  got = float(loss(params, batch))
  np.testing.assert_allclose(got, by_hand(0.7, contrasted=[1, 2]), rtol=1e-5)
  _, rolled, count, valid, same = (np.asarray(x) for x in jax.jit(functools.partial(contrast.gaps, model=model))(params, batch))
  np.testing.assert_allclose(rolled, [nll(r, (r - 1) % 3)[0] for r in range(3)], rtol=1e-6)
  other_way = np.asarray([nll(r, (r + 1) % 3)[0] for r in range(3)])
  assert np.abs(rolled - other_way).max() > 1e-3 and contrast.contrasted(count, valid, same).tolist() == [False, True, True]
  no_answer = dict(batch, loss_mask=batch["loss_mask"] * np.array([[1], [0], [1]], np.int32))
  (own_0, count_0), (own_2, count_2) = nll(0, 0), nll(2, 2)
  term_2 = np.log1p(np.exp(own_2 / count_2 - nll(2, 1)[0] / count_2))
  np.testing.assert_allclose(float(loss(params, no_answer)),
                             (own_0 + own_2) / (count_0 + count_2) + 0.7 * term_2, rtol=1e-5)
  not_valid = dict(batch, valid=np.array([True, True, False]))  # row 2 out, and row 0's neighbour is row 2
  own = [nll(r, r) for r in range(2)]
  term_1 = np.log1p(np.exp(own[1][0] / own[1][1] - nll(1, 0)[0] / own[1][1]))
  np.testing.assert_allclose(float(loss(params, not_valid)),
                             (own[0][0] + own[1][0]) / (own[0][1] + own[1][1]) + 0.7 * term_1, rtol=1e-5)
  both = lambda m, b: jax.jit(lambda p: (jax.value_and_grad(lambda q: contrast.contrastive_loss(q, b, model=m, weight=0.7))(p),
                                         jax.value_and_grad(lambda q: uqa_model.answer_loss(q, b, model=m))(p)))
  with_term, alone = both(model, batch)(params)
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(with_term[1]), jax.tree.leaves(alone[1])))
  zeros, params, two = _setup("zeros")
  with_term, alone = both(zeros, two)(params)
  np.testing.assert_allclose(float(with_term[0]), float(alone[0]) + 0.7 * np.log(2), rtol=1e-6)
  for x, y in zip(jax.tree.leaves(with_term[1]), jax.tree.leaves(alone[1])):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
