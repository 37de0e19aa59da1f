"""T5's deshuffling objective: a permutation of the chunk in, the chunk out."""

import numpy as np
import pytest

from llm_jax.objectives import make_objective
from objectives_testing import EOS, PAD, make_config, make_specials, random_words


def test_inputs_are_a_permutation_and_targets_the_original():
  objective = make_objective(make_config("deshuffle"), make_specials(), 32)
  assert objective.family == "encoder_decoder" and objective.raw_length == 31
  rng = np.random.default_rng(0)
  tokens = np.arange(100, 131, dtype=np.int32)
  example = objective(tokens, rng)
  assert example["inputs"][-1] == EOS and example["targets"][-1] == EOS
  np.testing.assert_array_equal(example["targets"][:-1], tokens)
  np.testing.assert_array_equal(np.sort(example["inputs"][:-1]), tokens)
  assert not np.array_equal(example["inputs"][:-1], tokens)
  np.testing.assert_array_equal(example["decoder_inputs"], np.concatenate([[PAD], example["targets"][:-1]]))
  assert example["loss_weights"].sum() == 32


def test_order_depends_on_the_rng_only():
  objective = make_objective(make_config("deshuffle"), make_specials(), 16, target_length=20)
  tokens = random_words(np.random.default_rng(1), 15)
  first = objective(tokens, np.random.default_rng(5))["inputs"]
  np.testing.assert_array_equal(first, objective(tokens, np.random.default_rng(5))["inputs"])
  assert not np.array_equal(first, objective(tokens, np.random.default_rng(6))["inputs"])
  assert objective.feature_lengths["targets"] == 20


def test_overflow_and_lengths_are_checked():
  objective = make_objective(make_config("deshuffle"), make_specials(), 8)
  with pytest.raises(ValueError, match="raw_length"):
    objective(np.arange(20, 40), np.random.default_rng(0))
  with pytest.raises(ValueError, match="sequence_length"):
    make_objective(make_config("deshuffle"), make_specials(), 1)


def test_bert_style_denoising_reconstructs_the_whole_chunk():
  objective = make_objective(make_config("bert_denoising", mask_token_rate=0.9,
                                         random_token_rate=0.1), make_specials(), 41)
  tokens = random_words(np.random.default_rng(2), 40)
  example = objective(tokens, np.random.default_rng(3))
  np.testing.assert_array_equal(example["targets"][:-1], tokens)
  changed = example["inputs"][:-1] != tokens
  assert changed.sum() == 6  # round(0.15 * 40), all replaced (90% [MASK], 10% random)
  assert example["loss_weights"].sum() == 41  # the whole chunk is reconstructed
