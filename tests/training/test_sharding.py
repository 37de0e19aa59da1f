"""Mesh construction, rule validation, parameter and batch shardings (8 fake CPU devices)."""

import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from llm_jax import distributed
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import optimizer
from llm_jax.training import train_step as train_step_lib


def _mesh(**axes):
  cfg = sharding.default_mesh_config()
  cfg.update(axes)
  return sharding.make_mesh(cfg)


def _config(**mesh_axes):
  model_cfg = models.get_preset("gpt_tiny")
  model_cfg.update(dict(vocab_size=64, d_model=32, d_ff=64, num_heads=4, num_layers=1, max_len=16))
  mesh_cfg = sharding.default_mesh_config()
  mesh_cfg.update(mesh_axes)
  return ml_collections.ConfigDict(dict(
      model=model_cfg, optimizer=optimizer.default_optimizer_config(), mesh=mesh_cfg,
      sharding=dict(rules=sharding.default_sharding_rules()),
      train=dict(batch_size=8, steps=10, seed=0, nan_at_step=-1)))


def test_default_mesh_puts_all_devices_on_data_with_auto_axes():
  mesh = sharding.make_mesh(sharding.default_mesh_config())
  assert mesh.axis_names == ("data", "fsdp", "expert", "tensor")
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "expert": 1, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_minus_one_takes_the_remaining_devices():
  assert dict(_mesh(data=-1, fsdp=2, tensor=2).shape) == {"data": 2, "fsdp": 2, "expert": 1,
                                                          "tensor": 2}
  assert dict(_mesh(data=2, fsdp=-1, tensor=1).shape) == {"data": 2, "fsdp": 4, "expert": 1,
                                                          "tensor": 1}


@pytest.mark.parametrize("axes, words", [
    (dict(data=-1, tensor=3), ["tensor", "3", "8 devices"]),
    (dict(data=2, fsdp=2, tensor=1), ["4", "8 devices"]),
    (dict(data=-1, fsdp=-1), ["only one axis", "data", "fsdp"]),
    (dict(data=-1, model=2), ["unknown", "model"]),
    (dict(data=-1, tensor=0), ["mesh.tensor=0"]),
])
def test_bad_mesh_config_names_the_problem(axes, words):
  with pytest.raises(ValueError) as error:
    _mesh(**axes)
  for word in words:
    assert word in str(error.value)


def test_rule_with_unknown_mesh_axis_is_an_error():
  rules = sharding.default_sharding_rules() + (("experts", "stage"),)
  with pytest.raises(ValueError, match="'experts'.*'stage'"):
    sharding.validate_rules(rules, _mesh())


def test_logical_name_without_rule_is_an_error():
  specs = {"dense": {"kernel": P("embed", "experts")}}
  with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\].*'experts'.*no sharding rule"):
    sharding.logical_to_mesh_sharding(specs, _mesh(), sharding.default_sharding_rules())


def test_dimension_that_cannot_be_placed_is_an_error():
  rules = (("embed", "tensor"), ("mlp", "tensor"))  # both want the same mesh axis
  with pytest.raises(ValueError, match="'mlp'.*cannot be placed"):
    sharding.logical_to_mesh_sharding({"w": P("embed", "mlp")}, _mesh(tensor=2), rules)


def test_indivisible_parameter_names_path_axis_and_sizes():
  shapes = {"block": {"kernel": jax.ShapeDtypeStruct((32, 6), np.float32)}}
  specs = {"block": {"kernel": P("embed", "mlp")}}
  with pytest.raises(ValueError) as error:
    sharding.logical_to_mesh_sharding(specs, _mesh(data=2, tensor=4),
                                      sharding.default_sharding_rules(), shapes)
  for word in ("['block']['kernel']", "'mlp'", "size 6", "'tensor'", "4"):
    assert word in str(error.value)


def test_rules_are_read_in_order_and_mapped_to_mesh_axes():
  mesh = _mesh(data=2, fsdp=2, tensor=2)
  specs = {"a": P("embed", "mlp"), "b": P("vocab", "embed"), "c": P("layers", "heads", None)}
  shardings = sharding.logical_to_mesh_sharding(specs, mesh, sharding.default_sharding_rules())
  assert shardings["a"].spec == P("fsdp", "tensor")
  assert shardings["b"].spec == P("tensor", "fsdp")
  assert shardings["c"].spec == P(None, "tensor", None)
  # A later rule is the fallback when the first one's mesh axis is taken.
  rules = (("embed", "tensor"), ("mlp", "tensor"), ("mlp", "fsdp"))
  assert sharding.logical_to_mesh_sharding(
      {"w": P("embed", "mlp")}, mesh, rules)["w"].spec == P("tensor", "fsdp")


def test_rules_from_config_accept_lists():
  cfg = ml_collections.ConfigDict(dict(sharding=dict(rules=[["batch", ["data", "fsdp"]],
                                                            ["embed", None]])))
  assert sharding.rules_from_config(cfg) == (("batch", ("data", "fsdp")), ("embed", None))


def test_global_batch_is_split_over_data_and_fsdp():
  mesh = _mesh(data=2, fsdp=2, tensor=2)
  rules = sharding.default_sharding_rules()
  local = {"inputs": np.arange(8 * 4, dtype=np.int32).reshape(8, 4),
           "nsp_labels": np.arange(8, dtype=np.int32)}
  batch = sharding.make_global_batch(local, mesh, rules)
  assert batch["inputs"].shape == (8, 4)
  assert batch["inputs"].sharding.spec == P(("data", "fsdp", "expert"), None)
  assert batch["nsp_labels"].sharding.spec == P(("data", "fsdp", "expert"))
  # Each of the 4 batch shards holds 2 rows, replicated over the 2 tensor devices.
  shard_shapes = {s.data.shape for s in batch["inputs"].addressable_shards}
  assert shard_shapes == {(2, 4)}
  np.testing.assert_array_equal(np.asarray(batch["inputs"]), local["inputs"])
  assert sharding.batch_sharding(mesh, rules).spec == P(("data", "fsdp", "expert"), None)


def test_global_batch_not_divisible_by_batch_shards_is_an_error():
  with pytest.raises(ValueError, match="'inputs'.*6.*8 batch shards"):
    sharding.make_global_batch({"inputs": np.zeros((6, 4), np.int32)}, _mesh(),
                               sharding.default_sharding_rules())


@pytest.mark.parametrize("mesh_axes, kernel_shard, embedding_shard", [
    (dict(data=1, fsdp=8), (4, 4, 8), (64, 4)),
    (dict(data=2, tensor=4), (32, 1, 8), (16, 32)),
])
def test_params_are_sharded_as_the_rules_say(mesh_axes, kernel_shard, embedding_shard):
  cfg = _config(**mesh_axes)
  model = models.build_model(cfg.model)
  state, _ = train_step_lib.create_train_state(
      cfg, model, sharding.make_mesh(cfg.mesh), jax.random.key(0))
  kernel = state.params["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
  embedding = state.params["token_embed"]["embedding"]
  assert kernel.shape == (32, 4, 8)  # embed, heads, head_dim
  assert kernel.sharding.spec == P("fsdp", "tensor", None)
  assert {s.data.shape for s in kernel.addressable_shards} == {kernel_shard}
  assert embedding.shape == (64, 32)  # vocab, embed
  assert embedding.sharding.spec == P("tensor", "fsdp")
  assert {s.data.shape for s in embedding.addressable_shards} == {embedding_shard}
  # Adam's moments live where their parameters live.
  adam_state = state.opt_state[1][0]
  mu_kernel = adam_state.mu["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
  assert mu_kernel.sharding == kernel.sharding


def test_heads_not_divisible_by_tensor_axis_fail_before_compiling(monkeypatch):
  cfg = _config(data=-1, tensor=8)  # 4 heads over 8 tensor devices
  model = models.build_model(cfg.model)

  def no_compile(*args, **kwargs):
    raise AssertionError("jax.jit called before validation")

  monkeypatch.setattr(jax, "jit", no_compile)
  with pytest.raises(ValueError) as error:
    train_step_lib.create_train_state(cfg, model, sharding.make_mesh(cfg.mesh), jax.random.key(0))
  for word in ("self_attention", "heads', size 4", "'tensor'", "total size 8"):
    assert word in str(error.value)


def test_rule_with_unknown_mesh_axis_fails_before_tracing_the_model():
  cfg = _config()
  cfg.sharding.rules = sharding.default_sharding_rules() + (("mlp", "model"),)
  with pytest.raises(ValueError, match="'model'"):
    train_step_lib.abstract_train_state(cfg, models.build_model(cfg.model),
                                        sharding.make_mesh(cfg.mesh))


def test_distributed_single_process_is_a_no_op(monkeypatch):
  for name in ("LLM_JAX_COORDINATOR", "LLM_JAX_NUM_PROCESSES", "LLM_JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.maybe_initialize() is False
  assert distributed.maybe_initialize(num_processes=1) is False


@pytest.mark.parametrize("env, match", [
    ({"LLM_JAX_NUM_PROCESSES": "2", "LLM_JAX_PROCESS_ID": "0"}, "coordinator"),
    ({"LLM_JAX_NUM_PROCESSES": "2", "LLM_JAX_COORDINATOR": "127.0.0.1:1234",
      "LLM_JAX_PROCESS_ID": "2"}, "process_id=2"),
    ({"LLM_JAX_NUM_PROCESSES": "two"}, "LLM_JAX_NUM_PROCESSES"),
])
def test_distributed_bad_settings_are_errors(monkeypatch, env, match):
  for name in ("LLM_JAX_COORDINATOR", "LLM_JAX_NUM_PROCESSES", "LLM_JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=match):
    distributed.maybe_initialize()
