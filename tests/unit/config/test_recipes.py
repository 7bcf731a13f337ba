"""The stage recipes refuse settings that contradict each other, naming them, when the config is read."""

import pytest

from uqa_jax.config.recipes import AlignConfig, PretrainConfig


def test_train_encoder_needs_full_fine_tuning_and_a_real_encoder():
  with pytest.raises(ValueError, match="train_encoder=True needs mode='full'"):
    AlignConfig(train_encoder=True)
  with pytest.raises(ValueError, match="the zeros control never reads the encoder"):
    AlignConfig(mode="full", train_encoder=True, user="zeros")
  with pytest.raises(ValueError, match="user='text20' puts the history into the prompt as text"):
    AlignConfig(mode="adapter", user="text20")


def test_training_loops_share_their_length_and_cadence_fields_with_their_own_defaults():
  """`TrainingLoop`: steps, else epochs of whole batches; each block keeps its recipe's defaults."""
  assert PretrainConfig(batch_size=10, epochs=3).total_steps(rows=95) == 27  # 9 whole batches x 3
  assert PretrainConfig(batch_size=10, epochs=3, steps=5).total_steps(rows=95) == 5
  assert AlignConfig(batch_size=64, epochs=2).total_steps(rows=10) == 2  # at least one batch per epoch
  assert (PretrainConfig().batch_size, PretrainConfig().epochs, PretrainConfig().log_every) == (256, 10, 50)
  assert (AlignConfig().batch_size, AlignConfig().epochs, AlignConfig().log_every) == (32, 3, 10)
  with pytest.raises(ValueError, match="memory '80 gigs'"):
    AlignConfig(device_memory="80 gigs")
