"""Block-wise NF4 / int8 quantisation: error bounds, code layout, jit, QLoRA models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import models
from llm_jax.peft import quantize


def _kernel(shape, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(shape).astype(np.float32)
  w[0, :8] = 0.0  # an all-zero block
  return w


def _unpack(codes):
  codes = np.asarray(codes)
  return np.stack([codes >> 4, codes & 15], axis=-1).reshape(*codes.shape[:-1], -1)


def test_int8_error_is_at_most_absmax_over_127_per_block():
  w = _kernel((6, 128))
  q = quantize.quantize(w, "int8", 32)
  assert (q.codes.dtype, q.codes.shape) == (jnp.int8, (6, 128))
  assert (q.scales.dtype, q.scales.shape) == (jnp.float32, (6, 4))
  absmax = np.abs(w.reshape(6, 4, 32)).max(-1)
  np.testing.assert_allclose(q.scales, absmax)
  err = np.abs(np.asarray(quantize.dequantize(q)) - w).reshape(6, 4, 32).max(-1)
  assert np.all(err <= absmax / 127 + 1e-7), (err / np.maximum(absmax, 1e-9)).max()
  assert np.all(err[absmax > 0] <= absmax[absmax > 0] / 254 * 1.0001)  # round to nearest
  assert np.all(np.asarray(quantize.dequantize(q))[0, :8] == 0)


def test_nf4_codes_are_the_nearest_of_the_16_levels_times_block_absmax():
  w = _kernel((3, 4, 64))
  q = quantize.quantize(w, "nf4", 16)
  assert (q.codes.dtype, q.codes.shape) == (jnp.uint8, (3, 4, 32))
  assert (q.scales.dtype, q.scales.shape) == (jnp.float32, (3, 4, 4))
  assert q.codes.nbytes * 8 == w.nbytes  # 4 bits per float32 value
  assert q.nbytes == w.nbytes // 8 + w.nbytes // 16  # + one float32 per 16 values
  absmax = np.abs(w.reshape(3, 4, 4, 16)).max(-1, keepdims=True)
  normalized = (w.reshape(3, 4, 4, 16) / np.where(absmax > 0, absmax, 1)).reshape(w.shape)
  codes = _unpack(q.codes)
  levels = quantize.NF4_LEVELS
  distance = np.abs(normalized[..., None] - levels)
  chosen = np.take_along_axis(distance, codes[..., None].astype(np.int64), -1)[..., 0]
  assert np.all(chosen <= distance.min(-1) + 1e-6)
  expected = (levels[codes].reshape(3, 4, 4, 16) * absmax).reshape(w.shape)
  np.testing.assert_allclose(quantize.dequantize(q), expected, rtol=1e-6, atol=1e-7)
  assert np.all(np.abs(np.asarray(quantize.dequantize(q)) - w) <= absmax.max() * 0.162)


def test_block_is_at_most_the_last_dimension_and_must_divide_it():
  q = quantize.quantize(_kernel((4, 32)), "nf4", 64)
  assert (q.block_size, q.scales.shape) == (32, (4, 1))
  with pytest.raises(ValueError, match=r"decoder/layers_0/mlp/wo/kernel: last dimension 48"):
    quantize.quantize_tree({"decoder": {"layers_0": {"mlp": {"wo": {
        "kernel": np.ones((8, 48), np.float32)}}}}}, r"mlp/wo$", "int8", 32)
  with pytest.raises(ValueError, match="even last dimension"):
    quantize.quantize(np.ones((2, 3), np.float32), "nf4", 3)
  with pytest.raises(ValueError, match="unknown quantization 'fp8'"):
    quantize.quantize(np.ones((2, 4), np.float32), "fp8", 2)


def test_quantize_and_dequantize_under_jit_keep_the_dtype():
  w = jnp.asarray(_kernel((8, 64)), jnp.bfloat16)
  for kind in quantize.KINDS:
    q = jax.jit(quantize.quantize, static_argnums=(1, 2))(w, kind, 32)
    eager = quantize.quantize(w, kind, 32)
    np.testing.assert_array_equal(q.codes, eager.codes)
    out = jax.jit(quantize.dequantize)(q)
    assert out.dtype == jnp.bfloat16 and out.shape == w.shape
    np.testing.assert_array_equal(out, quantize.dequantize(eager))


def test_quantize_tree_replaces_only_matching_kernels():
  tree = {"a": {"query": {"kernel": _kernel((4, 16)), "bias": np.ones(16, np.float32)},
                "key": {"kernel": _kernel((4, 16))}}}
  q = quantize.quantize_tree(tree, r"query$", "int8", 8)
  assert isinstance(q["a"]["query"]["kernel"], quantize.QuantizedArray)
  assert q["a"]["query"]["bias"] is tree["a"]["query"]["bias"]
  assert q["a"]["key"]["kernel"] is tree["a"]["key"]["kernel"]
  back = quantize.dequantize_tree(q)
  np.testing.assert_allclose(back["a"]["query"]["kernel"], tree["a"]["query"]["kernel"],
                             atol=np.abs(tree["a"]["query"]["kernel"]).max() / 127)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_qlora_model_runs_on_the_quantized_base(scan_layers):
  """Quantised kernels give the logits of their dequantised values; LoRA grads flow."""
  cfg = models.get_preset("llama_tiny")
  cfg.scan_layers = scan_layers
  cfg.peft.update(dict(lora_rank=4, lora_targets=r"(attention/(query|value)|mlp/wi_0)$",
                       base_quantization="nf4", quantization_block_size=32))
  model = models.build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 256, (2, 8)), jnp.int32)
  params = jax.jit(lambda key: jax.tree.map(  # + 0.05: lora_b != 0
      lambda x: x + 0.05, nn.unbox(model.init(key, tokens)["params"])))(jax.random.key(0))
  qparams = jax.jit(lambda p: quantize.quantize_base(cfg, p))(params)
  layer = qparams["decoder"]["layers" if scan_layers else "layers_0"]
  assert isinstance(layer["self_attention"]["query"]["kernel"], quantize.QuantizedArray)
  assert isinstance(layer["mlp"]["wi_0"]["kernel"], quantize.QuantizedArray)
  assert not isinstance(layer["self_attention"]["key"]["kernel"], quantize.QuantizedArray)
  apply = jax.jit(lambda p: model.apply({"params": p}, tokens)["logits"])
  ours = apply(qparams)
  np.testing.assert_array_equal(ours, apply(jax.jit(quantize.dequantize_tree)(qparams)))
  assert float(jnp.max(jnp.abs(ours - apply(params)))) > 0  # the base really is quantised

  is_q = lambda x: isinstance(x, quantize.QuantizedArray)
  name = jax.tree_util.keystr
  lora_leaves = {name(path): x for path, x in jax.tree_util.tree_flatten_with_path(
      qparams, is_leaf=is_q)[0] if "lora_" in name(path)}

  def loss(leaves):  # only the LoRA leaves are differentiated; the uint8 codes stay frozen
    p = jax.tree_util.tree_map_with_path(lambda path, x: leaves.get(name(path), x), qparams,
                                         is_leaf=is_q)
    return jnp.mean(model.apply({"params": p}, tokens)["logits"] ** 2)

  grads = jax.jit(jax.grad(loss))(lora_leaves)
  assert len(grads) == (6 if scan_layers else 12)
  assert all(float(jnp.abs(g).sum()) > 0 for g in grads.values())
