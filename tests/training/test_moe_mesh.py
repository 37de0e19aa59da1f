"""MoE training: the same losses on one device and on meshes with an expert axis (8 fake CPU
devices); the auxiliary losses reach the training loss and the metrics."""

import functools

import jax
import numpy as np
import pytest

from llm_jax import models
from llm_jax import sharding
from llm_jax.training import train_step as train_step_lib
from tests.training import test_mesh_invariance as mesh_test

STEPS = 3
MESHES = {
    "expert": dict(data=2, fsdp=1, expert=4, tensor=1),
    "expert_fsdp_tensor": dict(data=1, fsdp=2, expert=2, tensor=2),
}
ROUTING = {
    "dropless_top2": dict(router="topk", top_k=2, capacity_factor=0.0),
    "switch_capacity": dict(router="switch", capacity_factor=1.0),
}


def _config(routing, num_experts=4):
  cfg = mesh_test._config("llama_tiny")  # pylint: disable=protected-access
  cfg.model.num_kv_heads = 2
  cfg.model.moe.update(dict(num_experts=num_experts, load_balance_coef=0.1, z_loss_coef=0.01,
                            **ROUTING[routing]))
  return cfg


def _train(cfg, mesh, initial_state=None):
  """(per-step metrics, initial state on the host) of STEPS steps on one repeated batch."""
  model = models.build_model(cfg.model)
  if initial_state is None:
    state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
    initial_state = jax.device_get(state)
  else:
    _, shardings = train_step_lib.abstract_train_state(cfg, model, mesh)
    state = jax.device_put(initial_state, shardings)
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  batch = sharding.make_global_batch(mesh_test._batch(cfg, seed=0),  # pylint: disable=protected-access
                                     mesh, sharding.rules_from_config(cfg))
  history = []
  for _ in range(STEPS):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append({k: float(v) for k, v in metrics.items()})
  return history, initial_state


@functools.cache
def _reference(routing):
  cfg = _config(routing)
  return _train(cfg, sharding.make_mesh(cfg.mesh, jax.devices()[:1]))


@pytest.mark.parametrize("routing, mesh_name", [
    ("dropless_top2", "expert"), ("dropless_top2", "expert_fsdp_tensor"),
    ("switch_capacity", "expert")])
def test_moe_losses_match_one_device_on_expert_meshes(routing, mesh_name):
  ref_history, initial_state = _reference(routing)
  cfg = _config(routing)
  cfg.mesh.update(MESHES[mesh_name])
  history, _ = _train(cfg, sharding.make_mesh(cfg.mesh), initial_state)

  assert ref_history[-1]["loss"] < ref_history[0]["loss"]
  for key in ("loss", "moe_load_balance_loss", "moe_z_loss", "moe_expert_load_0"):
    np.testing.assert_allclose([m[key] for m in history], [m[key] for m in ref_history],
                               rtol=1e-5, err_msg=key)


def test_aux_losses_reach_the_training_loss_and_metrics():
  cfg = _config("dropless_top2")
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  model = models.build_model(cfg.model)
  state, _ = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  opts = train_step_lib.step_options(cfg, model, mesh)
  batch = mesh_test._batch(cfg, seed=0)  # pylint: disable=protected-access
  totals = opts.task.totals(batch)
  with sharding.mesh_context(mesh, opts.rules):
    loss, sums = jax.jit(functools.partial(train_step_lib.loss_fn, opts=opts))(
        state.params, state.frozen, batch, None, totals, 1.0)
    outputs = train_step_lib.apply_model(opts, state.params, state.frozen, batch)
  task_loss, _ = opts.task.loss(outputs, batch, totals)
  aux = (0.1 * outputs["moe_load_balance_loss"] + 0.01 * outputs["moe_z_loss"])
  assert float(aux) > 0.1  # the load-balancing loss is about 1
  np.testing.assert_allclose(loss, task_loss + aux, rtol=1e-5)
  load = [float(sums[f"moe_expert_load_{e}"]) for e in range(4)]
  np.testing.assert_allclose(sum(load), 1.0, rtol=1e-5)
  np.testing.assert_allclose(sums["moe_load_balance_loss"], outputs["moe_load_balance_loss"],
                             rtol=1e-6)


def test_capacity_dispatch_exchanges_tokens_by_all_to_all():
  cfg = _config("switch_capacity")
  cfg.mesh.update(MESHES["expert"])
  mesh = sharding.make_mesh(cfg.mesh)
  model = models.build_model(cfg.model)
  abstract, shardings = train_step_lib.abstract_train_state(cfg, model, mesh)
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  batch = sharding.make_global_batch(mesh_test._batch(cfg, seed=0),  # pylint: disable=protected-access
                                     mesh, sharding.rules_from_config(cfg))
  hlo = step.lower(abstract, batch, jax.random.key(1)).compile().as_text()
  assert "all-to-all" in hlo


def test_expert_count_must_divide_the_expert_mesh_axis():
  cfg = _config("dropless_top2", num_experts=6)
  cfg.mesh.update(MESHES["expert"])
  model = models.build_model(cfg.model)
  with pytest.raises(ValueError, match=r"'expert', size 6 \(model.moe.num_experts\).*'expert'"):
    train_step_lib.state_layout(cfg, model, sharding.make_mesh(cfg.mesh))
