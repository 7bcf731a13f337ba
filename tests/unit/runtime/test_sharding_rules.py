"""One rules table for every parameter: each axis of each parameter (norms, biases and adapters
included) has a logical name the table knows, and `config.sharding_rules` overrides entries."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import default
from tests.unit.encoders import test_user_model
from uqa_jax import adapters
from uqa_jax import encoders
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.llm import model as llm_model
from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import parallel


def unnamed_axes(boxed) -> list[str]:
  """Paths of parameters with an axis that has no logical name, or a name the rules lack."""
  bad = []
  flat = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))[0]
  for path, leaf in flat:
    key = jax.tree_util.keystr(path)
    if not isinstance(leaf, nn.Partitioned):
      bad.append(f"{key}: no logical names")
    elif (len(leaf.names) != leaf.value.ndim or any(n not in parallel.LOGICAL_AXES for n in leaf.names)
          or len(set(leaf.names)) != len(leaf.names)):  # flax cannot map a name used twice
      bad.append(f"{key}: {leaf.names} for shape {leaf.value.shape}")
  assert flat, "no parameters found"
  return bad


@pytest.mark.parametrize("name", encoders.NAMES)
def test_every_user_model_parameter_is_named(name):
  kw = {} if name == "gru4rec" else {"num_heads": 2}
  cfg = EncoderConfig(name=name, d_model=16, num_layers=2, d_state=4, max_len=8, **kw)
  model = UserModel(cfg, test_user_model.VOCAB, test_user_model.DIMS)
  batch = test_user_model._batch()
  if name == "hstu":
    batch["timestamps"] = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
  boxed = jax.eval_shape(lambda b: model.init(jax.random.PRNGKey(0), b), batch)["params"]
  assert unnamed_axes(boxed) == []


@pytest.mark.parametrize("name", adapters.NAMES)
def test_every_adapter_parameter_is_named(name):
  cfg = AdapterConfig(name=name, d_llm=24, **({"d_model": 16, "num_heads": 2} if name == "qformer" else {}))
  model = adapters.get(name)(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 8)),
                                            jnp.ones((1, 3), jnp.int32)))["params"]
  assert unnamed_axes(boxed) == []


@pytest.mark.parametrize("tied,bias", [(True, True), (False, False)])
def test_every_llm_parameter_is_named(tied, bias):
  cfg = LLMConfig(vocab_size=64, d_model=16, d_ff=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4, rope_theta=1e4, rms_eps=1e-6,
                  qkv_bias=bias, tie_embeddings=tied)
  ids = jnp.zeros((1, 2), jnp.int32)
  boxed = jax.eval_shape(lambda: llm_model.Decoder(cfg).init(jax.random.PRNGKey(0), ids, positions=ids,
                                                             kv_mask=jnp.ones((1, 2), jnp.int32)))["params"]
  assert unnamed_axes(boxed) == []


def test_config_overrides_a_rule_and_unknown_names_are_errors():
  config = default.get_config()
  table = dict(parallel.config_rules(config))
  assert table["items"] == ("fsdp", "tensor") and table["embed"] == "fsdp" and table["norm"] is None
  config.sharding_rules.items = ("tensor",)
  config.sharding_rules.embed = ()
  table = dict(parallel.config_rules(config))
  assert table["items"] == "tensor" and table["embed"] is None
  with pytest.raises(ValueError, match="unknown logical axis; expected one of layers"):
    parallel.rules({"item": ("tensor",)})
  with pytest.raises(ValueError, match=r"unknown mesh axes \['model'\]"):
    parallel.rules({"items": ("model",)})
