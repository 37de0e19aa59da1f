"""Houlsby bottleneck adapters: identity at init, per-layer parameters with logical names, and
prompt-learning parameters' logical names against the default sharding rules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import models
from llm_jax import sharding
from llm_jax.models import prompts

ADAPTER = 4


def _cfg(preset, **peft_fields):
  cfg = models.get_preset(preset)
  cfg.update(dict(vocab_size=64, d_model=32, num_layers=2, d_ff=64, max_len=32))
  if cfg.head_dim is not None:
    cfg.head_dim = 8
  cfg.peft.update(peft_fields)
  return cfg


def _args(cfg, tokens):
  return (tokens, tokens) if cfg.family == "encoder_decoder" else (tokens,)


def _outputs(cfg, out):
  return out["hidden_states"] if cfg.family == "encoder" else out["logits"]


def _strip(tree):
  """The tree without adapter subtrees (the base model's parameters)."""
  if not isinstance(tree, dict):
    return tree
  return {k: _strip(v) for k, v in tree.items() if not k.endswith("_adapter")}


def _params(model, cfg, tokens):
  """(boxed abstract params, params): NumPy-drawn base weights, adapters from their own init."""
  boxed = jax.eval_shape(model.init, jax.random.key(0), *_args(cfg, tokens[:1, :4]))["params"]
  rng = np.random.default_rng(0)
  fresh = nn.unbox(prompts.Adapter(cfg).init(jax.random.key(1),
                                             jnp.zeros((1, 1, cfg.d_model)))["params"])

  def draw(path, leaf):
    keys = [p.key for p in path]
    adapter = [i for i, k in enumerate(keys) if k.endswith("_adapter")]
    if adapter:
      sub = fresh
      for k in keys[adapter[0] + 1:]:
        sub = sub[k]
      return np.asarray(sub)
    return (float(keys[-1] == "scale") + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return boxed, jax.tree_util.tree_map_with_path(draw, nn.unbox(boxed))


@pytest.mark.parametrize("preset", ["llama_tiny", "bert_tiny", "t5_tiny"])
def test_fresh_adapters_are_the_identity(preset):
  cfg = _cfg(preset, adapter_size=ADAPTER)
  model = models.build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 6)), jnp.int32)
  boxed, params = _params(model, cfg, tokens)
  base = models.build_model(_cfg(preset))

  stacks = ["decoder"] if cfg.family == "decoder" else (
      ["encoder"] if cfg.family == "encoder" else ["encoder", "decoder"])
  for stack in stacks:
    for i in range(2):
      layer, boxed_layer = params[stack][f"layers_{i}"], boxed[stack][f"layers_{i}"]
      for name in ("self_attention_adapter", "mlp_adapter"):
        adapter = layer[name]
        assert adapter["down"]["kernel"].shape == (32, ADAPTER)
        assert adapter["up"]["kernel"].shape == (ADAPTER, 32)
        assert not np.any(adapter["up"]["kernel"]) and not np.any(adapter["up"]["bias"])
        assert np.any(adapter["down"]["kernel"])
        assert boxed_layer[name]["down"]["kernel"].names == ("embed", None)
        assert boxed_layer[name]["up"]["kernel"].names == (None, "embed")
        assert boxed_layer[name]["up"]["bias"].names == ("embed",)
      assert "cross_attention_adapter" not in layer

  apply = jax.jit(model.apply)
  ours = _outputs(cfg, apply({"params": params}, *_args(cfg, tokens)))
  theirs = _outputs(cfg, jax.jit(base.apply)({"params": _strip(params)}, *_args(cfg, tokens)))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-6)

  # A trained (non-zero) up-projection changes the outputs.
  rng = np.random.default_rng(1)
  moved = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.5 * rng.standard_normal(x.shape).astype(x.dtype)
      if "adapter" in jax.tree_util.keystr(path) else x, params)
  changed = _outputs(cfg, apply({"params": moved}, *_args(cfg, tokens)))
  assert float(jnp.max(jnp.abs(changed - ours))) > 1e-3


def test_adapter_gradient_reaches_the_up_projection():
  cfg = _cfg("gpt_tiny", adapter_size=ADAPTER)
  cfg.num_layers = 1
  model = models.build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 6)), jnp.int32)
  _, params = _params(model, cfg, tokens)
  loss = lambda p: jnp.mean(model.apply({"params": p}, tokens)["logits"] ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  up = grads["decoder"]["layers_0"]["mlp_adapter"]["up"]["kernel"]
  assert float(jnp.max(jnp.abs(up))) > 0


@pytest.mark.parametrize("peft_fields", [
    dict(adapter_size=ADAPTER, prefix_length=3, prompt_length=2),
    dict(prefix_length=3, prefix_hidden=16),
])
def test_scanned_parameters_have_known_logical_names(peft_fields):
  """Per-layer leaves gain the 'layers' axis; every name has a default sharding rule."""
  cfg = _cfg("llama_tiny", **peft_fields)
  cfg.scan_layers = True
  model = models.build_model(cfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
  layer = boxed["decoder"]["layers"]
  if "adapter_size" in peft_fields:
    assert layer["mlp_adapter"]["down"]["kernel"].names == ("layers", "embed", None)
    assert layer["self_attention_adapter"]["up"]["kernel"].value.shape == (2, ADAPTER, 32)
    assert layer["self_attention"]["prefix"]["key"].names == (
        "layers", None, "kv_heads", "head_dim")
    assert boxed["soft_prompt"]["embedding"].names == (None, "embed")
  else:
    wo = boxed["decoder"]["prefix_encoder"]["wo"]["kernel"]
    assert wo.value.shape == (16, 2, 2, 2, 8)  # hidden, layers, key/value, kv_heads, head_dim
  rules = sharding.default_sharding_rules()
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    sharding.logical_to_mesh_axes(leaf.names, rules, where=jax.tree_util.keystr(path))
