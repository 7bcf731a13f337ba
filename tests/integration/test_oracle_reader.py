"""The oracle reader (`align.user=oracle_titles`) trained on a tiny LLM: it learns to read soft
tokens that hold the answer, and finds nothing when the answer is not in the history."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.unit.soft_prompt.test_splice import CFG as LLM_CFG
from uqa_jax import adapters
from uqa_jax.adapters import identity
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config import choices
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.llm import model as llm_model
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.soft_prompt import optimizer

# How the oracle reader is set up: a plain start, and default_full's (soft tokens before the
# question, identity-initialised adapter maps, Stage 2's own optimizer over adapter and LLM).
ORACLE_SETUPS = (pytest.param("prefix", marks=pytest.mark.slow), "as default_full")  # prefix: `make test-slow`
TEST_ROWS = 2048  # the null gain's noise: 256 rows gave up to 0.45 nats, 2048 rows 0.10


def _oracle_reader_gain(planted: bool, setup: str, seed: int = 0) -> float:
  """Trains adapter + tiny LLM on soft tokens from the title embeddings of 6 clicks; the answer
  token is the last click's item mod 8 (planted) or random. -> eval NLL shuffled minus own."""
  rng = np.random.default_rng(seed)
  adapter = adapters.get("recent")(AdapterConfig(name="recent", num_tokens=2, d_llm=LLM_CFG.d_model, embed_rms=1.0))
  llm = llm_model.Decoder(LLM_CFG)
  like_full = setup == "as default_full"
  model = uqa_model.UQAModel(None, adapter, llm, place="placeholder" if like_full else "prefix", user=choices.ORACLE)

  def batch(n):
    items = rng.integers(0, 16, size=(n, 6))
    titles = np.zeros((n, 6, 2), np.int32)
    titles[:, :, 0] = 10 + items  # one title token per item (the second slot pads)
    answer = 30 + (items[:, -1] % 8 if planted else rng.integers(0, 8, size=n))
    ids = np.stack([np.full(n, 3), np.full(n, 4), answer, np.full(n, 5)], 1).astype(np.int32)
    return {uqa_model.TITLE_COLUMN: titles, "lengths": np.full(n, 6, np.int32), "input_ids": ids,
            "attention_mask": np.ones_like(ids), "loss_mask": np.tile(np.array([0, 0, 1, 0], np.int32), (n, 1)),
            "question_at": np.ones(n, np.int32)}  # token 4 plays the question

  train, test = batch(256), batch(TEST_ROWS)
  ids = jnp.zeros((1, 2), jnp.int32)
  params = {"adapter": adapter.init(jax.random.PRNGKey(1), jnp.zeros((1, 2, LLM_CFG.d_model)), jnp.ones((1, 2), jnp.int32))["params"],
            "llm": nn.unbox(llm.init(jax.random.PRNGKey(2), ids, positions=ids, kv_mask=jnp.ones((1, 2), jnp.int32))["params"])}
  tx = optax.adam(3e-3)
  if like_full:
    params["adapter"] = identity.identity_maps(params["adapter"])
    tx = optimizer.make_optimizer(AlignConfig(mode="full", user=choices.ORACLE, place="placeholder",
                                                learning_rate=3e-3, llm_learning_rate=3e-3, schedule="constant",
                                                weight_decay=0.0), 300)

  @jax.jit
  def fit(params):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: uqa_model.answer_loss(p, train, model=model))(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (params, tx.init(params)), None, length=300)[0][0]

  params = fit(params)
  nll = lambda b: float(uqa_model.answer_loss(params, b, model=model))
  others = dict(test, **{uqa_model.TITLE_COLUMN: np.roll(test[uqa_model.TITLE_COLUMN], 1, axis=0)})
  return nll(others) - nll(test)


@pytest.mark.parametrize("setup", ORACLE_SETUPS)
def test_oracle_reader_learns_to_read_soft_tokens_when_they_hold_the_answer(setup):
  assert _oracle_reader_gain(planted=True, setup=setup) > 1.0  # chance is ln 8 = 2.08 nats


@pytest.mark.parametrize("setup", ORACLE_SETUPS)
def test_oracle_reader_finds_nothing_when_the_answer_is_not_in_the_history(setup):
  assert abs(_oracle_reader_gain(planted=False, setup=setup)) < 0.25
