"""QAT: fake quantization on the grid, straight-through gradients, and the train-step option."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from llm_jax.compress import qat
from llm_jax.peft import quantize


def test_ste_gradient_equals_the_float_gradient_inside_the_clipping_range():
  w = jax.random.normal(jax.random.key(0), (8, 6))
  g = jax.random.normal(jax.random.key(1), (8, 6))
  scales = jnp.full((8, 6), 1.0)  # clips |w| > 1
  grad = jax.grad(lambda x: jnp.sum(qat.ste_round(x, scales, "int4") * g))(w)
  inside = np.abs(np.asarray(w)) <= 1.0
  assert inside.any() and (~inside).any()
  np.testing.assert_array_equal(np.asarray(grad)[inside], np.asarray(g)[inside])
  np.testing.assert_array_equal(np.asarray(grad)[~inside], 0.0)


def test_fake_quantized_kernels_lie_on_the_ptq_grid():
  kernel = jax.random.normal(jax.random.key(2), (16, 12))
  layer = "decoder/layers_0/mlp/wi"
  fake = qat.fake_quantize_kernel(kernel, layer, "int4", 8)
  real = quantize.dequantize(quantize.quantize_channels(kernel, "int4", 8, 1))
  np.testing.assert_allclose(fake, real, atol=1e-6)
  float_grad = jax.grad(lambda k: jnp.sum(jnp.sin(k)))(kernel)
  ste_grad = jax.grad(lambda k: jnp.sum(
      jnp.sin(k) + jax.lax.stop_gradient(jnp.sin(qat.fake_quantize_kernel(k, layer, "int4", 8))
                                         - jnp.sin(k))))(kernel)
  np.testing.assert_allclose(ste_grad, float_grad, atol=1e-6)


def test_params_transform_is_off_by_default_and_fake_quantizes_when_on():
  cfg = ml_collections.ConfigDict({"quantization": dict(qat="none", qat_group_size=0,
                                                        qat_targets=".")})
  assert qat.params_transform(cfg) is None
  cfg.quantization.qat = "int8"
  params = {"decoder": {"layers_0": {"mlp": {"wi": {"kernel": jnp.linspace(-1, 1, 64).reshape(8, 8)}}},
                        "final_norm": {"scale": jnp.ones(8) * 0.123}}}
  out = qat.params_transform(cfg)(params)
  kernel = np.asarray(params["decoder"]["layers_0"]["mlp"]["wi"]["kernel"])
  codes = np.asarray(out["decoder"]["layers_0"]["mlp"]["wi"]["kernel"]) / np.abs(kernel).max(0) * 127
  assert np.max(np.abs(codes - kernel / np.abs(kernel).max(0) * 127)) > 0.1  # rounded
  np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
  np.testing.assert_array_equal(out["decoder"]["final_norm"]["scale"], params["decoder"]["final_norm"]["scale"])
