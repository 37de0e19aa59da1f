"""Loss sums, and the jitted train / eval steps on a tiny decoder (8 fake CPU devices)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from llm_jax import models
from llm_jax import sharding
from llm_jax.tasks import losses as loss_lib
from llm_jax.training import optimizer
from llm_jax.training import train_step as train_step_lib

BATCH, LENGTH, VOCAB = 8, 8, 64


def _numpy_log_softmax(logits):
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _loss_inputs(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (2, 5)).astype(np.int32)
  weights = (rng.random((2, 5)) > 0.3).astype(np.float32)
  return logits, targets, weights


def test_cross_entropy_sums_match_numpy():
  logits, targets, weights = _loss_inputs()
  sums = loss_lib.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  log_probs = _numpy_log_softmax(logits)
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  assert float(sums["loss_sum"]) == pytest.approx((nll * weights).sum(), rel=1e-5)
  assert float(sums["weight_sum"]) == weights.sum()
  assert float(sums["correct_sum"]) == ((logits.argmax(-1) == targets) * weights).sum()
  assert float(sums["z_loss_sum"]) == 0.0


def test_z_loss_adds_log_z_squared():
  logits, targets, weights = _loss_inputs(1)
  sums = loss_lib.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
                                z_loss=1e-2)
  shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
  log_z = logits.max(-1) + np.log(np.exp(shifted).sum(-1))
  assert float(sums["z_loss_sum"]) == pytest.approx(1e-2 * (log_z**2 * weights).sum(), rel=1e-5)


def test_bfloat16_logits_are_reduced_in_float32():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(0, 3, (4, 64, 512)), jnp.bfloat16)
  targets = rng.integers(0, 512, (4, 64)).astype(np.int32)
  weights = np.ones((4, 64), np.float32)
  sums = loss_lib.cross_entropy(logits, jnp.asarray(targets), jnp.asarray(weights))
  log_probs = _numpy_log_softmax(np.asarray(logits.astype(jnp.float32)))
  expected = -np.take_along_axis(log_probs, targets[..., None], -1).sum()
  assert sums["loss_sum"].dtype == jnp.float32
  assert float(sums["loss_sum"]) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_shape_mismatch_is_an_error():
  logits, targets, weights = _loss_inputs()
  with pytest.raises(ValueError, match="loss_weights"):
    loss_lib.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights[:, :3]))


def _config(mesh_axes=None, **optimizer_overrides):
  model_cfg = models.get_preset("gpt_tiny")
  model_cfg.update(dict(vocab_size=VOCAB, d_model=32, d_ff=64, num_heads=4, num_layers=1,
                        max_len=16))
  opt_cfg = optimizer.default_optimizer_config()
  opt_cfg.update(dict(learning_rate=1e-2, warmup_steps=0, schedule="constant"))
  opt_cfg.update(optimizer_overrides)
  mesh_cfg = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))
  mesh_cfg.update(mesh_axes or {})
  return ml_collections.ConfigDict(dict(
      model=model_cfg, optimizer=opt_cfg, mesh=mesh_cfg,
      sharding=dict(rules=sharding.default_sharding_rules()),
      train=dict(batch_size=BATCH, steps=100, seed=0, nan_at_step=-1)))


def _mesh(cfg):
  devices = jax.devices()[:cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor]
  return sharding.make_mesh(cfg.mesh, devices)


def _batch(seed=0):
  """Rows with 0 to 4 padding tokens, so the loss weight differs from row to row."""
  rng = np.random.default_rng(seed)
  padding = np.arange(BATCH) % 5
  segments = (np.arange(LENGTH)[None, :] < LENGTH - padding[:, None]).astype(np.int32)
  return dict(
      inputs=rng.integers(1, VOCAB, (BATCH, LENGTH)).astype(np.int32),
      input_segment_ids=segments,
      input_positions=np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)),
      targets=rng.integers(1, VOCAB, (BATCH, LENGTH)).astype(np.int32),
      loss_weights=segments.astype(np.float32),
  )


def _setup(cfg):
  model = models.build_model(cfg.model)
  mesh = _mesh(cfg)
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  batch = sharding.make_global_batch(_batch(), mesh, sharding.rules_from_config(cfg))
  return model, mesh, state, shardings, batch


def _run(cfg, steps):
  model, mesh, state, shardings, batch = _setup(cfg)
  train_step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  history = []
  for _ in range(steps):
    state, metrics = train_step(state, batch, jax.random.key(1))
    history.append(jax.device_get(metrics))
  return state, history


def test_step_metrics_eval_donation_and_nan_hook():
  cfg = _config(z_loss=1e-3)
  cfg.train.nan_at_step = 3  # the third step, counted from 1
  model, mesh, state, shardings, batch = _setup(cfg)
  train_step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  eval_step = train_step_lib.make_eval_step(cfg, model, mesh, shardings)

  sums = jax.device_get(eval_step(state.params, batch))
  old_params = state.params
  state, metrics = train_step(state, batch, jax.random.key(1))
  weights = _batch()["loss_weights"]
  assert metrics["tokens"] == weights.sum() == sums["weight_sum"]
  assert float(metrics["loss"]) == pytest.approx(sums["loss_sum"] / sums["weight_sum"], rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(sums["correct_sum"] / sums["weight_sum"])
  assert float(metrics["learning_rate"]) == pytest.approx(1e-2)
  assert float(metrics["z_loss"]) > 0 and float(metrics["grad_norm"]) > 0
  assert int(state.step) == 1
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old_params))  # donated

  state, metrics = train_step(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  state, metrics = train_step(state, batch, jax.random.key(1))  # step 2: the NaN hook
  assert np.isnan(float(metrics["loss"]))
  assert np.isnan(float(metrics["grad_norm"]))


def test_batch_of_the_wrong_global_size_is_an_error():
  cfg = _config()
  cfg.train.batch_size = 16
  model = models.build_model(cfg.model)
  mesh = _mesh(cfg)
  abstract_state, shardings = train_step_lib.abstract_train_state(cfg, model, mesh)
  train_step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  with pytest.raises(ValueError, match="'inputs'.*GLOBAL batch size 16"):
    train_step(abstract_state, _batch(), jax.random.key(1))


def test_microbatches_that_do_not_split_over_the_mesh_are_an_error():
  cfg = _config(mesh_axes=dict(data=4), microbatches=4)  # 2 rows per microbatch, 4 shards
  model = models.build_model(cfg.model)
  mesh = _mesh(cfg)
  _, shardings = train_step_lib.abstract_train_state(cfg, model, mesh)
  with pytest.raises(ValueError, match="microbatches=4.*4 batch shards"):
    train_step_lib.make_train_step(cfg, model, mesh, shardings)


def test_gradient_accumulation_equals_the_full_batch():
  # eps=1 makes Adam's step nearly proportional to the gradient, so parameters show any error.
  mesh_axes = dict(data=2, fsdp=1, tensor=4)
  full_state, full = _run(_config(mesh_axes, eps=1.0), steps=2)
  accumulated_state, accumulated = _run(_config(mesh_axes, eps=1.0, microbatches=4), steps=2)
  for name in ("loss", "grad_norm", "accuracy", "tokens"):
    np.testing.assert_allclose([m[name] for m in accumulated], [m[name] for m in full],
                               rtol=1e-5, err_msg=name)
  for a, b in zip(jax.tree.leaves(accumulated_state.params), jax.tree.leaves(full_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_adafactor_lowers_the_loss():
  _, history = _run(_config(name="adafactor", learning_rate=3e-2), steps=5)
  losses = [float(m["loss"]) for m in history]
  assert losses[-1] < losses[0] - 0.1, losses


def test_bfloat16_compute_keeps_float32_master_params():
  cfg = _config()
  cfg.model.dtype = "bfloat16"
  state, history = _run(cfg, steps=5)
  losses = [float(m["loss"]) for m in history]
  assert losses[-1] < losses[0] - 0.1, losses
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  adam_state = state.opt_state[1][0]
  assert {leaf.dtype for leaf in jax.tree.leaves(adam_state.mu)} == {jnp.dtype(jnp.float32)}
