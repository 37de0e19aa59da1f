"""LoRA and QLoRA fine-tuning in the one train step: frozen base, optimizer state of the
adapters only, any mesh, exact resume."""

import jax
import numpy as np
import pytest

from llm_jax import models
from llm_jax import sharding
from llm_jax.peft import quantize
from llm_jax.training import partition
from llm_jax.training import train_step as train_step_lib
from tests.training import test_mesh_invariance as mesh_test

LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets=r"attention/(query|value)$|mlp/wo$")


def _lora_config(preset="llama_tiny", **peft):
  cfg = mesh_test._config(preset)  # pylint: disable=protected-access
  cfg.model.peft.update({**LORA, **peft})
  return cfg


def _lora_b_nonzero(state):
  """LoRA's B starts at zero; a step moves it, so later steps change the model."""
  return any(np.any(np.asarray(v) != 0) for k, v in partition.flat(jax.device_get(state.params)).items()
             if k.endswith("lora_b"))


def _run(cfg, mesh, steps=3):
  model = models.build_model(cfg.model)
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  initial = jax.device_get(state)
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  batch = sharding.make_global_batch(mesh_test._batch(cfg, 0), mesh,  # pylint: disable=protected-access
                                     sharding.rules_from_config(cfg))
  losses = []
  for i in range(steps):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  return initial, jax.device_get(state), losses


def test_lora_trains_only_the_adapters():
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  initial, final, losses = _run(_lora_config(), mesh, steps=4)
  trainable = set(partition.flat(final.params))
  assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
  for name, value in partition.flat(initial.frozen).items():
    np.testing.assert_array_equal(partition.flat(final.frozen)[name], value, err_msg=name)
  moments = sum(x.size for x in jax.tree.leaves(final.opt_state) if x.ndim > 0)
  assert moments == 2 * partition.count(final.params)
  assert _lora_b_nonzero(final) and losses[-1] < losses[0]


def test_qlora_stores_the_frozen_base_in_nf4_and_trains():
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  cfg = _lora_config(base_quantization="nf4", quantization_block_size=16)
  initial, final, losses = _run(cfg, mesh, steps=4)
  quantized = {k: v for k, v in partition.flat(initial.frozen).items()
               if isinstance(v, quantize.QuantizedArray)}
  # Every frozen dense kernel: q, k, v, out, wi_0, wi_1, wo per layer and the untied LM head.
  assert len(quantized) == 7 * cfg.model.num_layers + 1
  assert all(q.codes.dtype == np.uint8 for q in quantized.values())
  # Step 0's loss is the loss of the dequantized model.
  model = models.build_model(cfg.model)
  params = jax.device_get(train_step_lib.full_params(initial))
  batch = mesh_test._batch(cfg, 0)  # pylint: disable=protected-access
  logits = model.apply({"params": params}, batch["inputs"], batch["input_segment_ids"],
                       batch["input_positions"])["logits"]
  log_probs = jax.nn.log_softmax(logits, -1)
  ce = -np.take_along_axis(np.asarray(log_probs), batch["targets"][..., None], -1)[..., 0]
  expected = float((ce * batch["loss_weights"]).sum() / batch["loss_weights"].sum())
  assert losses[0] == pytest.approx(expected, rel=1e-5)
  assert losses[-1] < losses[0]
  for name, value in quantized.items():
    np.testing.assert_array_equal(partition.flat(final.frozen)[name].codes, value.codes)


@pytest.mark.parametrize("mesh_name", ["fsdp", "tensor", "mixed"])
def test_lora_run_is_mesh_invariant(mesh_name):
  cfg = _lora_config("gpt_tiny")
  one = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  _, reference, ref_losses = _run(cfg, one)
  cfg.mesh.update(mesh_test.MESHES[mesh_name])
  _, final, losses = _run(cfg, sharding.make_mesh(cfg.mesh))
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for name, value in partition.flat(reference.params).items():
    np.testing.assert_allclose(partition.flat(final.params)[name], value, atol=1e-5, err_msg=name)


def test_lora_fine_tuning_resumes_exactly(tmp_path, tiny_config):
  from llm_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(steps=6)
  cfg.model.peft.update(LORA)
  cfg.train.checkpoint_every = 3
  whole = loop.train(cfg, str(tmp_path / "whole"))
  cfg = tiny_config(steps=6)
  cfg.model.peft.update(LORA)
  cfg.train.checkpoint_every = 3
  loop.train(cfg, str(tmp_path / "split"), stop_at_step=3)
  resumed = loop.train(cfg, str(tmp_path / "split"))
  assert resumed["step"] == whole["step"] == 6
  assert resumed["loss"] == whole["loss"]
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  a = partition.flat(jax.device_get(load.load_from_workdir(str(tmp_path / "whole"))[1]))
  b = partition.flat(jax.device_get(load.load_from_workdir(str(tmp_path / "split"))[1]))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_lora_target_that_matches_nothing_stops_the_run_at_start():
  cfg = _lora_config(lora_targets=r"attention/no_such_projection$")
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  with pytest.raises(ValueError, match=r"model.peft.lora_targets=.*no_such_projection.* matches "
                     r"no dense layer"):
    train_step_lib.state_layout(cfg, models.build_model(cfg.model), mesh)
