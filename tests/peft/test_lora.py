"""LoRA in the dense layers: parameters and their logical axes, zero-B start, scan_layers,
dropout, and errors for a rank above a layer's width or targets that match nothing."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import models
from llm_jax.models import layers
from llm_jax.peft import targets

TOKENS = np.random.default_rng(0).integers(1, 256, (2, 8)).astype(np.int32)
TARGETS = r"attention/(query|key|value|out)$|mlp/(wi_0|wo)$|lm_head$"


def _cfg(scan_layers=False, **peft):
  cfg = models.get_preset("llama_tiny")
  cfg.scan_layers = scan_layers
  cfg.peft.update(peft)
  return cfg


def _init(cfg):
  model = models.build_model(cfg)
  boxed = jax.jit(lambda key: model.init(key, TOKENS)["params"])(jax.random.key(0))
  return model, boxed


@functools.lru_cache(maxsize=None)
def _apply_fn(model):
  return jax.jit(lambda p: model.apply({"params": p}, TOKENS)["logits"])


def _logits(model, params):
  return np.asarray(_apply_fn(model)(params))


def _randomize_lora_b(params, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (0.1 * rng.standard_normal(x.shape)).astype(np.float32)
      if jax.tree_util.keystr(path).endswith("['lora_b']") else x, params)


_CACHE = {}


def _lora_model():
  """(cfg, model, boxed params) of a LoRA llama_tiny, initialised once per module."""
  if "lora" not in _CACHE:
    cfg = _cfg(lora_rank=4, lora_alpha=8.0, lora_targets=TARGETS)
    _CACHE["lora"] = (cfg, *_init(cfg))
  return _CACHE["lora"]


def test_lora_params_shapes_axes_and_init():
  cfg, _, boxed = _lora_model()
  attention = boxed["decoder"]["layers_0"]["self_attention"]
  query, out = attention["query"], attention["out"]
  assert (query["lora_a"].value.shape, query["lora_a"].names) == ((64, 4), ("embed", None))
  assert (query["lora_b"].value.shape, query["lora_b"].names) == (
      (4, 4, 16), (None, "heads", "head_dim"))
  assert (attention["key"]["lora_b"].names) == (None, "kv_heads", "head_dim")
  assert (out["lora_a"].value.shape, out["lora_a"].names) == ((4, 16, 4),
                                                              ("heads", "head_dim", None))
  assert (out["lora_b"].value.shape, out["lora_b"].names) == ((4, 64), (None, "embed"))
  assert boxed["head"]["lm_head"]["lora_b"].names == (None, "vocab")
  assert "lora_a" not in boxed["decoder"]["layers_0"]["mlp"]["wi_1"]
  a = np.asarray(query["lora_a"].value)
  assert np.all(np.asarray(query["lora_b"].value) == 0)
  assert np.abs(a).min() >= 0 and 0 < np.abs(a).max() <= 1 / np.sqrt(64)  # kaiming uniform
  assert np.std(a) > 0.5 / np.sqrt(3 * 64)
  assert len(targets.check_targets(cfg, nn.unbox(boxed))["lora"]) == 2 * 6 + 1


def _strip_lora(tree):
  if isinstance(tree, dict):
    return {k: _strip_lora(v) for k, v in tree.items() if k not in ("lora_a", "lora_b")}
  return tree


def test_zero_b_equals_the_base_model_and_b_changes_it():
  _, model, boxed = _lora_model()
  params = nn.unbox(boxed)
  base = _logits(models.build_model(_cfg()), _strip_lora(params))
  ours = _logits(model, params)
  print(f"\n[parity] lora with zero B vs base: max abs diff {np.max(np.abs(ours - base)):.3e}")
  assert np.max(np.abs(ours - base)) <= 1e-6
  changed = _logits(model, _randomize_lora_b(params))
  assert np.max(np.abs(changed - base)) > 1e-2


def test_scan_layers_matches_unrolled_with_the_stacked_weights():
  from llm_jax.peft import hf_peft  # pylint: disable=g-import-not-at-top

  cfg, model, boxed = _lora_model()
  params = _randomize_lora_b(nn.unbox(boxed))
  scan_cfg = _cfg(scan_layers=True, **cfg.peft.to_dict())
  scan_model, scan_boxed = _init(scan_cfg)
  assert scan_boxed["decoder"]["layers"]["self_attention"]["query"]["lora_a"].names == (
      "layers", "embed", None)
  stacked = hf_peft._stack_layers(params)  # pylint: disable=protected-access
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), stacked,
               nn.unbox(scan_boxed))
  diff = np.max(np.abs(_logits(scan_model, stacked) - _logits(model, params)))
  print(f"\n[parity] lora scan_layers vs unrolled: max abs diff {diff:.3e}")
  assert diff <= 1e-5


def test_lora_dropout_runs_only_with_a_dropout_rng():
  cfg = _cfg(lora_rank=4, lora_alpha=8.0, lora_dropout=0.5, lora_targets=TARGETS)
  model, boxed = _init(cfg)
  params = _randomize_lora_b(nn.unbox(boxed))
  train = jax.jit(lambda p, rngs: model.apply({"params": p}, TOKENS, deterministic=False,
                                               rngs=rngs)["logits"])
  eval_logits = np.asarray(train(params, {}))
  assert np.max(np.abs(eval_logits - _logits(_lora_model()[1], params))) <= 1e-6
  dropped = np.asarray(train(params, {"dropout": jax.random.key(3)}))
  assert np.max(np.abs(dropped - eval_logits)) > 1e-3


def test_non_trailing_contraction_matches_the_trailing_one():
  peft = models.default_model_config().peft
  peft.update(dict(lora_rank=2, lora_targets="^$", ia3_targets="^$",  # a top-level layer: ''
                   ia3_feedforward="^$"))
  from ml_collections import FrozenConfigDict  # pylint: disable=g-import-not-at-top
  kw = dict(features=5, kernel_axes=("embed", "mlp", None), bias_axes=(None,), use_bias=True,
            dtype=jnp.float32, param_dtype=jnp.float32, init=nn.initializers.normal(1.0),
            peft=FrozenConfigDict(peft))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 6, 4)), jnp.float32)
  trailing = layers.DenseGeneral(axis=(-2, -1), **kw)
  variables = nn.Module.init(trailing, jax.random.key(0), x)  # the `init` field shadows .init
  params = jax.tree.map(lambda v: v + 0.3, nn.unbox(variables["params"]))
  assert params["lora_a"].shape == (6, 4, 2) and params["ia3_scale"].shape == (6, 4)
  y = trailing.apply({"params": params}, x)
  moved = layers.DenseGeneral(axis=(1, 3), **kw)
  y_moved = moved.apply({"params": params}, jnp.transpose(x, (0, 2, 1, 3)))
  np.testing.assert_allclose(y_moved, y, rtol=1e-5, atol=1e-5)


def test_rank_larger_than_a_layer_is_an_error_naming_it():
  cfg = _cfg(lora_rank=80, lora_targets=r"attention/query$")  # query: 64 -> 4 x 16
  with pytest.raises(ValueError, match=r"lora_rank=80 is larger than dense layer "
                                       r"'decoder/layers_0/self_attention/query': in=64"):
    models.abstract_params(models.build_model(cfg), cfg)
  with pytest.raises(ValueError, match=r"lora_rank=80 .*'decoder/layers/self_attention/query'"):
    scan = _cfg(scan_layers=True, lora_rank=80, lora_targets=r"attention/query$")
    targets.check_targets(scan)


def test_targets_matching_nothing_name_the_regex_and_list_the_layers():
  for field, peft in [("lora_targets", dict(lora_rank=4, lora_targets=r"attention/qkv$")),
                      ("ia3_targets", dict(ia3_targets=r"mlp/w_in$"))]:
    cfg = _cfg(**peft)
    regex = re.escape(peft[field])
    with pytest.raises(ValueError, match=rf"model\.peft\.{field}='{regex}' matches no dense "
                                         rf"layer.*decoder/layers_0/mlp/wi_0"):
      targets.check_targets(cfg)
  with pytest.raises(ValueError, match=r"lora_targets='attention/\(' is not a valid regex"):
    targets.check_targets(_cfg(lora_rank=4, lora_targets="attention/("))
  # Off methods are not checked; base params without adapter leaves work.
  cfg = _cfg(lora_rank=4, lora_targets="query$")
  base = models.abstract_params(models.build_model(_cfg()), _cfg())
  assert targets.check_targets(cfg, base) == {
      "lora": ["decoder/layers_0/self_attention/query", "decoder/layers_1/self_attention/query"],
      "ia3": []}
