"""(IA)^3: learned scales of dense layers' outputs (after the bias) or, for ia3_feedforward
layers, inputs; ones at init; logical axis names of the scaled axes."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from llm_jax import models
from llm_jax.peft import targets

TOKENS = np.random.default_rng(0).integers(1, 65, (2, 8)).astype(np.int32)
IA3 = dict(ia3_targets=r"attention/(key|value|out)$|mlp/wo$", ia3_feedforward=r"mlp/wo$|/out$")


def _cfg(scan_layers=False, **peft):
  cfg = models.get_preset("gpt_tiny")  # biases everywhere
  cfg.update(dict(num_layers=2, d_model=64, d_ff=128, scan_layers=scan_layers))
  cfg.peft.update(peft)
  return cfg


def _init(cfg):
  model = models.build_model(cfg)
  return model, jax.jit(lambda key: model.init(key, TOKENS)["params"])(jax.random.key(0))


def _logits(model, params):
  return np.asarray(jax.jit(lambda p: model.apply({"params": p}, TOKENS)["logits"])(params))


def _drop_ia3(tree):
  if isinstance(tree, dict):
    return {k: _drop_ia3(v) for k, v in tree.items() if k != "ia3_scale"}
  return tree


@pytest.fixture(scope="module")
def ia3_model():
  cfg = _cfg(**IA3)
  model, boxed = _init(cfg)
  return cfg, model, boxed


def test_ia3_scales_axes_and_ones_init(ia3_model):
  cfg, _, boxed = ia3_model
  layer = boxed["decoder"]["layers_0"]
  key, out, wo = (layer["self_attention"]["key"], layer["self_attention"]["out"],
                  layer["mlp"]["wo"])
  assert (key["ia3_scale"].value.shape, key["ia3_scale"].names) == ((4, 16),
                                                                    ("kv_heads", "head_dim"))
  assert (out["ia3_scale"].value.shape, out["ia3_scale"].names) == ((4, 16),
                                                                    ("heads", "head_dim"))
  assert (wo["ia3_scale"].value.shape, wo["ia3_scale"].names) == ((128,), ("mlp",))
  assert "ia3_scale" not in layer["self_attention"]["query"]
  assert "ia3_scale" not in layer["mlp"]["wi"]
  assert all(np.all(np.asarray(x["ia3_scale"].value) == 1) for x in (key, out, wo))
  assert len(targets.check_targets(cfg, nn.unbox(boxed))["ia3"]) == 2 * 4
  _, scan_boxed = _init(_cfg(scan_layers=True, **IA3))
  assert scan_boxed["decoder"]["layers"]["mlp"]["wo"]["ia3_scale"].names == ("layers", "mlp")


def test_ia3_equals_the_base_model_with_scaled_kernels_and_biases(ia3_model):
  _, model, boxed = ia3_model
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (1 + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
      if "ia3_scale" in jax.tree_util.keystr(path) else np.asarray(x), nn.unbox(boxed))
  base = jax.tree.map(np.copy, params)
  for i in range(2):
    layer = base["decoder"][f"layers_{i}"]
    for name in ("key", "value"):  # outputs: kernel [D, H, K] and bias [H, K]
      dense = layer["self_attention"][name]
      s = dense.pop("ia3_scale")
      dense["kernel"] = dense["kernel"] * s[None]
      dense["bias"] = dense["bias"] * s
    for dense in (layer["self_attention"]["out"], layer["mlp"]["wo"]):  # inputs
      s = dense.pop("ia3_scale")
      dense["kernel"] = dense["kernel"] * s.reshape(s.shape + (1,))
  base_apply = jax.jit(lambda p: models.build_model(_cfg()).apply({"params": p}, TOKENS)["logits"])
  ours = _logits(model, params)
  diff = float(np.max(np.abs(ours - base_apply(base))))
  print(f"\n[parity] ia3 vs scaled base kernels: max abs diff {diff:.3e}")
  assert diff <= 1e-4  # float32 logits: scaling folded into the kernel rounds differently
  at_init = _logits(model, nn.unbox(boxed))  # ones: the base model
  assert np.max(np.abs(at_init - base_apply(_drop_ia3(nn.unbox(boxed))))) <= 1e-6
  assert np.max(np.abs(ours - at_init)) > 1e-2
