"""DPO through the one train step: log 2 at step 0, the in-step and precomputed references give
the same losses, LoRA's reference is the base with its adapters off, training raises the
preference accuracy, and every mesh of 8 fake devices gives the one-device losses."""

import json
import math

import jax
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax import models
from llm_jax import sharding
from llm_jax.data import make_pipeline, make_tokenizer
from llm_jax.training import reference_pass
from llm_jax.training import train_step as train_step_lib

PAIRS = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + d)}
         for a, b, d in [(1, 2, 1), (3, 4, -1), (5, 5, 2), (7, 1, -2), (2, 9, 3), (6, 6, 1),
                         (4, 8, -3), (9, 9, 1)]]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
  return str(path)


def _config(pairs_file, name="dpo", num_labels=0, **task):
  cfg = config_lib.base_config("llama_tiny")
  cfg.model.num_labels = num_labels
  cfg.model.update(d_model=32, d_ff=64, num_heads=4, num_kv_heads=2, num_layers=1, head_dim=8)
  cfg.task.name = name
  cfg.task.template = "{prompt}"
  cfg.task.update(task)
  cfg.data.train_files = cfg.data.eval_files = pairs_file
  cfg.data.sequence_length = 12
  cfg.data.shuffle = False
  cfg.optimizer.update(learning_rate=1e-2, warmup_steps=0, weight_decay=0.0)
  cfg.train.batch_size = 16
  cfg.train.steps = 10
  return config_lib.finalize(cfg)


def _train(cfg, steps, mesh=None, batch=None, initial_state=None):
  """(losses, step metrics, state, initial state on the host) of `steps` steps on the first
  batch of the pipeline."""
  mesh = mesh or sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  model = models.build_model(cfg.model)
  rules = sharding.rules_from_config(cfg)
  layout = train_step_lib.state_layout(cfg, model, mesh)
  if initial_state is None:
    state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0),
                                                         layout=layout)
  else:
    shardings = layout.shardings
    state = jax.device_put(initial_state, shardings)
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings, layout=layout)
  batch = batch if batch is not None else next(make_pipeline(cfg, "train"))
  batch = sharding.make_global_batch(batch, mesh, rules)
  initial = jax.device_get(state)
  losses, history = [], []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
    history.append(jax.device_get(metrics))
  return losses, history, state, initial


@pytest.fixture(scope="module")
def one_device(pairs_file):
  """(losses, metrics, final state, initial state on the host) of the in-step DPO run."""
  return _train(_config(pairs_file), 3)


def test_step_zero_is_log_2_with_zero_rewards_and_reference_copy_stays_frozen(one_device):
  losses, history, state, initial = one_device
  np.testing.assert_allclose(losses[0], math.log(2), rtol=1e-6)
  assert abs(history[0]["chosen_reward"]) < 1e-6 and abs(history[0]["reward_margin"]) < 1e-6
  assert "reference" in state.frozen
  assert losses[-1] < losses[0]
  reference = jax.device_get(state.frozen["reference"])
  for got, expected in zip(jax.tree.leaves(reference), jax.tree.leaves(initial.params)):
    np.testing.assert_array_equal(got, expected)  # the reference is the initial policy
  trained = jax.device_get(train_step_lib.full_params(state))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(trained),
                                                   jax.tree.leaves(reference)))


def test_precomputed_reference_gives_the_in_step_losses(pairs_file, one_device, tmp_path):
  in_step = one_device[0]
  cfg = _config(pairs_file, reference="precomputed")
  cfg = reference_pass.resolve(cfg, str(tmp_path))
  model = models.build_model(cfg.model)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  reference_pass.ensure(cfg, model, mesh, train_step_lib.state_layout(cfg, model, mesh), None)
  stored = np.load(cfg.task.reference_logps_file)
  assert stored["train"].shape == (len(PAIRS), 2) and np.all(stored["train"] < 0)
  batch = next(make_pipeline(cfg, "train"))
  assert "reference_logps" in batch
  precomputed, _, state, _ = _train(cfg, 3, batch=batch)
  assert "reference" not in state.frozen
  np.testing.assert_allclose(precomputed, in_step, rtol=1e-5)


def test_lora_reference_is_the_base_with_adapters_off(pairs_file):
  cfg = _config(pairs_file)
  cfg.model.peft.lora_rank = 4
  cfg.model.peft.lora_targets = r"attention/(query|value)$"
  losses, _, state, _ = _train(cfg, 4)
  assert "reference" not in state.frozen
  np.testing.assert_allclose(losses[0], math.log(2), rtol=1e-6)
  assert losses[-1] < losses[0]


def test_dpo_and_reward_model_raise_preference_accuracy(pairs_file):
  for name in ("dpo", "reward_model"):
    cfg = _config(pairs_file, name=name, num_labels=1 if name == "reward_model" else 0)
    _, history, _, _ = _train(cfg, 12)
    assert history[-1]["accuracy"] == 1.0, (name, [h["accuracy"] for h in history])
    assert history[-1]["reward_margin"] > history[0]["reward_margin"]


def test_dpo_mesh_invariance(pairs_file, one_device):
  cfg = _config(pairs_file)
  cfg.mesh.update(dict(data=2, fsdp=2, tensor=2))
  sharded, _, _, _ = _train(cfg, 3, mesh=sharding.make_mesh(cfg.mesh), initial_state=one_device[3])
  np.testing.assert_allclose(sharded, one_device[0], rtol=1e-5)
