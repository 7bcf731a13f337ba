"""Ranges as data: each block's `LIMITS` rules, checked when the block is read."""

import dataclasses
from contextlib import nullcontext

import pytest

from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config import blocks
from uqa_jax.config import recipes
from uqa_jax.data import build
from uqa_jax.data.config import DataConfig
from uqa_jax.data.pipeline import InputConfig
from uqa_jax.encoders.config import EncoderConfig

CLASSES = (recipes.PretrainConfig, recipes.AlignConfig, recipes.EvaluateConfig, recipes.ProbeConfig,
           recipes.DiagnoseConfig, DataConfig, build.Filters, InputConfig, EncoderConfig, AdapterConfig)


@pytest.mark.parametrize("value,rule,inside", [
    (0, ">= 0", True), (-1, ">= 0", False), (0, "> 0", False), (1e-9, "> 0", True),
    (1, "<= 1", True), (1.5, "< 1", False),
    (0, "in [0, 1)", True), (1, "in [0, 1)", False), (0, "in (0, 1]", False), (1, "in (0, 1]", True),
    (-1, "in [-1, 2]", True), (2.5, "in [-1, 2]", False),
    (True, ">= 0", False), ("3", ">= 0", False), (None, ">= 0", False),  # not a number at all
])
def test_within_reads_each_rule_form(value, rule, inside):
  assert blocks.within(value, rule) is inside


def test_a_malformed_rule_is_an_error_not_a_pass():
  with pytest.raises(ValueError, match="malformed limit rule"):
    blocks.within(1, "at least 1")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_limit_names_a_field_and_every_default_obeys_it(cls):
  fields = {f.name for f in dataclasses.fields(cls)}
  assert set(cls.LIMITS) <= fields
  blocks.check_limits(cls(), cls.__name__)


@pytest.mark.parametrize("cls,field,bad", [
    (recipes.PretrainConfig, "steps", -5), (recipes.PretrainConfig, "batch_size", 0),
    (recipes.PretrainConfig, "learning_rate", 0.0), (recipes.AlignConfig, "checkpoint_every", 0),
    (recipes.AlignConfig, "betas", (0.9, 1.0)), (recipes.EvaluateConfig, "max_new_tokens", -1),
    (recipes.EvaluateConfig, "top_p", 1.5), (DataConfig, "align_eval_fraction", 0.0),
    (InputConfig, "bag_sizes", {"uni_seq_cate_bpe_token_ids": 0}), (EncoderConfig, "dropout", 1.0),
    (AdapterConfig, "num_tokens", 0),
], ids=lambda x: getattr(x, "__name__", str(x)))
def test_build_refuses_a_value_outside_its_limit_naming_key_value_and_rule(cls, field, bad):
  with pytest.raises(blocks.ConfigError) as e:
    blocks.build(cls, {field: bad}, "blk")
  assert str(e.value).startswith(f"config blk.{field}={bad!r}: expected {cls.LIMITS[field]}")


# Numeric fields without a range rule, and why: seeds and sizes the run derives take any value.
UNRULED = {"ProbeConfig": {"seed"}, "AdapterConfig": {"d_llm", "embed_rms"}, "InputConfig": {"batch_size", "max_len",
           "history_clicks", "seed", "num_epochs"}}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_numeric_setting_has_a_range_rule(cls):
  """A new int or float field without a LIMITS rule fails here: add the rule (or its reason above)."""
  import typing
  hints = typing.get_type_hints(cls)
  numeric = {f.name for f in dataclasses.fields(cls)
             if hints[f.name] in (int, float, tuple[float, float], int | None) or f.name == "bag_sizes"}
  assert numeric - set(cls.LIMITS) - UNRULED.get(cls.__name__, set()) == set()


@pytest.mark.parametrize("key,value,message", [
    ("pretrain.learning_rate", float("inf"), "config pretrain.learning_rate=inf: expected > 0"),
    ("encoder.num_heads", 3, "config encoder: d_model=32 is not divisible by num_heads=3"),
    ("encoder.dtype", "float64", "config encoder: dtype='float64'; expected one of float32, bfloat16, float16"),
    ("encoder.attention_impl", "pallas", "config encoder: attention_impl='pallas': trmpp offers auto, xla, cudnn"),
    ("data.filters.min_user_len", 90, "synthetic.max_len=80 < filters.min_user_len=90: every generated user would be dropped"),
    ("data.align_eval_fraction", 0.01, "synthetic.num_users=60 x align_eval_fraction=0.01 < 1"),
    ("mesh.data", 0, "mesh {'data': 0, 'fsdp': 1, 'tensor': 1}: each axis is a whole number >= 1, or -1"),
    ("mesh.tensor", -2, "each axis is a whole number >= 1"),
])
def test_relations_and_kinds_are_refused_when_the_config_is_read(key, value, message):
  from configs import smoke
  from uqa_jax import stages
  config = smoke.get_config()
  target = config
  *path, last = key.split(".")
  for part in path:
    target = target[part]
  with target.unlocked() if hasattr(target, "unlocked") else nullcontext():
    target[last] = value
  with pytest.raises(ValueError) as e:  # ConfigError / MeshError: both refusals, one line in main
    stages.check_config(config)
  assert message in str(e.value)


def test_a_qformer_whose_width_does_not_split_into_heads_is_refused():
  with pytest.raises(blocks.ConfigError, match="config adapter: d_model=30 is not divisible by num_heads=4"):
    blocks.read({"adapter": {"name": "qformer", "d_model": 30, "num_heads": 4}}, AdapterConfig)
