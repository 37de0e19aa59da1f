"""Frozen parameters, trainable-only optimizer state, per-group learning rates, NSP loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import optimizer as optimizer_lib
from llm_jax.training import partition
from llm_jax.training import train_step as train_step_lib

VOCAB, BATCH, LENGTH = 64, 8, 16


def _config(**optimizer):
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=2, d_ff=64, max_len=LENGTH)
  cfg.train.batch_size = BATCH
  cfg.train.steps = 10
  cfg.optimizer.warmup_steps = 0
  cfg.optimizer.learning_rate = 1e-2
  cfg.optimizer.update(optimizer)
  return cfg


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  ones = np.ones((BATCH, LENGTH), np.int32)
  return dict(inputs=rng.integers(1, VOCAB, (BATCH, LENGTH)).astype(np.int32),
              input_segment_ids=ones,
              input_positions=np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)),
              targets=rng.integers(1, VOCAB, (BATCH, LENGTH)).astype(np.int32),
              loss_weights=ones.astype(np.float32))


def _train(cfg, steps=3):
  model = models.build_model(cfg.model)
  mesh = sharding.make_mesh(cfg.mesh)
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  initial = jax.device_get(train_step_lib.full_params(state))
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  batch = sharding.make_global_batch(_batch(), mesh, sharding.rules_from_config(cfg))
  for i in range(steps):
    state, _ = step(state, batch, jax.random.key(i))
  return state, initial


def test_frozen_parameters_are_bit_identical_and_have_no_optimizer_state():
  cfg = _config(frozen=r"token_embed|position_embed|layers_0/")
  state, initial = _train(cfg)
  after = partition.flat(jax.device_get(train_step_lib.full_params(state)))
  before = partition.flat(initial)
  frozen = {k for k in before if "embed" in k or "layers_0/" in k}
  assert frozen and set(partition.flat(state.frozen)) == frozen
  for name in frozen:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  changed = [n for n in before if n not in frozen and not np.array_equal(after[n], before[n])]
  assert len(changed) == len(before) - len(frozen)
  # AdamW keeps two moments per trainable parameter and nothing for the frozen ones.
  moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
  assert moments == 2 * partition.count(state.params)
  assert partition.count(state.params) < partition.count(initial)


def test_trainable_regex_selects_and_frozen_wins():
  names = ["decoder/layers_0/mlp/wi/kernel", "decoder/layers_1/mlp/wi/kernel", "head/x"]
  opt = ml_collections.ConfigDict(dict(trainable=r"mlp", frozen=r"layers_0"))
  assert partition.trainable_names(names, opt) == {"decoder/layers_1/mlp/wi/kernel"}


@pytest.mark.parametrize("field", ["trainable", "frozen"])
def test_a_regex_that_matches_nothing_names_the_field(field):
  opt = ml_collections.ConfigDict(dict(trainable="", frozen=""))
  opt[field] = "no_such_layer"
  with pytest.raises(ValueError, match=f"optimizer.{field}='no_such_layer' matches no parameter"):
    partition.trainable_names(["decoder/layers_0/mlp/wi/kernel"], opt)


def test_freezing_everything_is_an_error():
  opt = ml_collections.ConfigDict(dict(trainable="", frozen="."))
  with pytest.raises(ValueError, match="no parameter is trainable"):
    partition.trainable_names(["a/kernel"], opt)


def test_layer_wise_decay_and_group_multipliers():
  opt = ml_collections.ConfigDict(dict(lr_multipliers=((r"^head/", 10.0),), layer_lr_decay=0.5))
  mult = lambda path, shape=(2,): optimizer_lib.lr_multiplier(path, shape, opt, num_layers=4)
  assert mult("decoder/layers_3/mlp/wi/kernel") == 0.5
  assert mult("decoder/layers_0/mlp/wi/kernel") == 0.5 ** 4
  assert mult("token_embed/embedding") == 0.5 ** 5
  assert mult("decoder/final_norm/scale") == 1.0
  assert mult("head/lm_head/kernel") == 10.0
  stacked = mult("decoder/layers/mlp/wi/kernel", (4, 3, 5))
  np.testing.assert_allclose(np.ravel(stacked), 0.5 ** (4 - np.arange(4)))
  assert np.shape(stacked) == (4, 1, 1)


def test_lr_multiplier_zero_keeps_a_group_still_but_gives_it_state():
  cfg = _config(lr_multipliers=((r"layers_1/", 0.0),), weight_decay=0.0)
  state, initial = _train(cfg, steps=2)
  after = partition.flat(jax.device_get(state.params))
  before = partition.flat(initial)
  assert all(np.array_equal(after[n], before[n]) for n in after if "layers_1/" in n)
  assert not all(np.array_equal(after[n], before[n]) for n in after if "layers_0/" in n)


def test_nsp_loss_is_added_in_pretraining():
  cfg = config_lib.base_config("bert_tiny")
  cfg.model.update(vocab_size=VOCAB, d_model=32, num_layers=1, num_heads=2, d_ff=64,
                   max_len=LENGTH, nsp_head=True, pooler=True)
  cfg.objective.nsp = True
  cfg.train.batch_size = BATCH
  cfg.optimizer.warmup_steps = 0
  model = models.build_model(cfg.model)
  mesh = sharding.make_mesh(cfg.mesh)
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  batch = _batch()
  batch["token_type_ids"] = np.zeros_like(batch["inputs"])
  batch["nsp_labels"] = np.repeat(np.arange(BATCH)[:, None] % 2, LENGTH, 1).astype(np.int32)
  params = jax.device_get(train_step_lib.full_params(state))
  outputs = model.apply({"params": params}, batch["inputs"], batch["input_segment_ids"],
                        batch["input_positions"], batch["token_type_ids"])
  mlm = optimizer_free_ce(outputs["logits"], batch["targets"]).mean()
  nsp = optimizer_free_ce(outputs["nsp_logits"], batch["nsp_labels"][:, 0]).mean()
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  state, metrics = step(state, sharding.make_global_batch(batch, mesh, sharding.rules_from_config(cfg)),
                        jax.random.key(0))
  # Only the NSP loss reaches the NSP head: it moved, so the loss was in the gradient.
  assert not np.allclose(jax.device_get(state.params["nsp_head"]["kernel"]),
                         params["nsp_head"]["kernel"])
  assert float(metrics["nsp_loss"]) == pytest.approx(float(nsp), rel=1e-4)
  assert float(metrics["loss"]) == pytest.approx(float(mlm), rel=1e-4)


def optimizer_free_ce(logits, labels):
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  return -np.take_along_axis(np.asarray(log_probs), np.asarray(labels)[..., None], -1)[..., 0]


def test_nsp_with_packing_is_refused():
  cfg = config_lib.base_config("bert_tiny")
  cfg.objective.name = "mlm"
  cfg.objective.nsp = True
  with pytest.raises(ValueError, match="data.pack=False"):
    config_lib.finalize(cfg)
