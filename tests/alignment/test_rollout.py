"""Rollouts: the compiled sampler with the current parameters, reproducible from the step rng;
completion masks and the training batch they make."""

import jax
import numpy as np

from llm_jax import data
from llm_jax import decoding
from llm_jax import models
from llm_jax import sharding
from llm_jax.alignment import rollout
from llm_jax.training import train_step as train_step_lib

from tests.alignment import rl_testing


def _policy():
  cfg = rl_testing.tiny_rl_config()
  from llm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.finalize(cfg)
  mesh = sharding.make_mesh(cfg.mesh)
  model = models.build_model(cfg.model)
  state, _ = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  tokenizer = data.make_tokenizer(cfg.data)
  return cfg, mesh, model, state, tokenizer


def test_rollout_is_the_compiled_sampler_reproducible_from_the_step_rng():
  cfg, mesh, model, state, tokenizer = _policy()
  rules = sharding.rules_from_config(cfg)
  opts = rollout.sampler_options(cfg.alignment, tokenizer)
  rows = rollout.repeat_prompts([tokenizer.encode("3+4="), tokenizer.encode("12+7=")], 4)
  assert rows[:4] == [tokenizer.encode("3+4=")] * 4
  params = train_step_lib.full_params(state)  # the sharded training parameters themselves
  key = jax.random.key(7)
  sample = lambda step: rollout.sample(model, params, rows, jax.random.fold_in(key, step), opts,
                                       mesh, rules)
  first = sample(3)
  np.testing.assert_array_equal(first, sample(3))
  assert not np.array_equal(first, sample(4))
  direct = decoding.generate(model, jax.device_get(params), rows, max_new_tokens=3,
                             method="sample", eos_id=opts.eos_id, rng=jax.random.fold_in(key, 3),
                             vocab_limit=tokenizer.vocab_size)
  np.testing.assert_array_equal(first, np.asarray(direct.tokens))
  assert first.shape == (8, cfg.alignment.max_new_tokens)
  # The group of one prompt samples different completions.
  assert len({tuple(r) for r in first[:4]}) > 1


def test_completion_masks_end_at_the_first_stop_token():
  completions = np.array([[20, 1, 0, 0], [20, 21, 22, 23], [19, 20, 1, 0]])
  lengths = rollout.completion_lengths(completions, stop_ids=(1, 19))
  assert lengths.tolist() == [2, 4, 1]
  rows = [[30, 31], [30], [32, 33]]
  batch = rollout.training_batch(rows, completions, lengths, row_length=7)
  assert batch["inputs"].shape == (3, 6)
  assert batch["inputs"][0].tolist() == [30, 31, 20, 1, 0, 0]
  assert batch["targets"][0].tolist() == [31, 20, 1, 0, 0, 0]
  assert batch["loss_weights"].tolist() == [[0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                                            [0, 1, 0, 0, 0, 0]]
  assert batch["input_segment_ids"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0],
                                                 [1, 1, 1, 0, 0, 0]]


def test_completion_texts_drop_the_stop_token():
  tokenizer = data.make_tokenizer(data.default_data_config())
  ids = np.array([tokenizer.encode("19") + [1, 0], tokenizer.encode("7\nx") + [0]])
  lengths = rollout.completion_lengths(ids, stop_ids=(1, tokenizer.encode("\n")[0]))
  assert rollout.completion_texts(tokenizer, ids, lengths, (1, tokenizer.encode("\n")[0])) == [
      "19", "7"]
