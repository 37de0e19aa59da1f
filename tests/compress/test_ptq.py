"""Weight-only PTQ: dequantization error bounds per scheme, packing, layouts and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.compress import ptq
from llm_jax.peft import quantize


def _kernel(shape, seed=0):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


@pytest.mark.parametrize("kind,group", [("int8", 0), ("int8", 8), ("int4", 0), ("int4", 8)])
def test_error_within_half_a_step_of_each_groups_scale(kind, group):
  w_DxF = _kernel((32, 24))
  q = quantize.quantize_channels(w_DxF, kind, group, contract_dims=1)
  error_DxF = np.abs(np.asarray(quantize.dequantize(q)) - w_DxF)
  g = 32 if group == 0 else group
  absmax_GxF = np.abs(w_DxF).reshape(32 // g, g, 24).max(axis=1)
  half_step_DxF = np.repeat(absmax_GxF, g, axis=0) / (2 * quantize.LEVELS[kind])
  assert np.all(error_DxF <= half_step_DxF + 1e-6)
  assert q.scales.shape == (24, 32 // g)


def test_groups_are_more_accurate_than_channels_and_int8_than_int4():
  w = _kernel((64, 16)) * np.linspace(0.1, 3, 64)[:, None]  # rows of very different ranges
  err = lambda kind, group: float(np.mean(np.square(
      np.asarray(quantize.dequantize(quantize.quantize_channels(w, kind, group, 1))) - w)))
  assert err("int4", 8) < err("int4", 0)
  assert err("int8", 0) < err("int4", 8)


def test_int4_packs_two_codes_per_byte():
  w = _kernel((128, 64))
  q8 = quantize.quantize_channels(w, "int8", 0, 1)
  q4 = quantize.quantize_channels(w, "int4", 32, 1)
  assert q8.codes.dtype == jnp.int8 and q4.codes.dtype == jnp.uint8
  assert q4.codes.size * 2 == w.size
  assert q4.nbytes < 0.3 * w.nbytes and q8.nbytes < 0.27 * w.nbytes


def test_multi_axis_kernels_and_scan_stacked_slices():
  w_HxKxD = _kernel((2, 8, 16))  # attention out: contracts heads and head_dim
  q = quantize.quantize_channels(w_HxKxD, "int8", 4, contract_dims=2)
  np.testing.assert_allclose(quantize.dequantize(q), w_HxKxD, atol=0.02)
  w_LxDxHxK = _kernel((3, 16, 2, 8))  # nn.scan slices the leading layers axis of every leaf
  stacked = quantize.quantize_channels(w_LxDxHxK, "int4", 8, contract_dims=1, lead_dims=1)
  layer_1 = jax.tree.map(lambda x: x[1], stacked)
  np.testing.assert_allclose(quantize.dequantize(layer_1),
                             quantize.dequantize(stacked)[1], atol=1e-6)
  assert quantize.dequantize(layer_1).shape == (16, 2, 8)


def test_a_group_that_does_not_divide_the_dimension_names_the_tensor():
  params = {"decoder": {"layers_0": {"mlp": {"wi": {"kernel": _kernel((24, 8))}}}}}
  with pytest.raises(ValueError, match=r"decoder/layers_0/mlp/wi/kernel.*group size 16.*24"):
    ptq.quantize_params(params, "int4", 16)
  with pytest.raises(ValueError, match="quantization.weights='int3'"):
    ptq.quantize_params(params, "int3", 0)
  with pytest.raises(ValueError, match="matches no dense layer"):
    ptq.quantize_params(params, "int8", 0, targets="attention")


def test_quantize_params_targets_and_bytes():
  params = {"token_embed": {"embedding": _kernel((16, 8))},
            "decoder": {"layers_0": {"self_attention": {"out": {"kernel": _kernel((2, 4, 8))}},
                                     "mlp": {"wi": {"kernel": _kernel((8, 32)),
                                                    "bias": np.zeros(32, np.float32)}}}}}
  q = ptq.quantize_params(params, "int8", 0, targets="mlp")
  assert isinstance(q["decoder"]["layers_0"]["mlp"]["wi"]["kernel"], quantize.QuantizedArray)
  assert isinstance(q["decoder"]["layers_0"]["self_attention"]["out"]["kernel"], np.ndarray)
  saved = 8 * 32 * 4 - (8 * 32 + 32 * 4)
  assert ptq.tree_bytes(params) - ptq.tree_bytes(q) == saved
  out = ptq.quantize_params(params, "int8", 0)["decoder"]["layers_0"]["self_attention"]["out"]
  assert out["kernel"].contract_dims == 2 and out["kernel"].scales.shape == (8, 1)


@pytest.mark.hf
def test_int8_logits_of_a_converted_random_gpt2_are_within_one_percent(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from llm_jax import convert  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.GPT2Config(vocab_size=99, n_positions=32, n_embd=32, n_layer=2,
                                   n_head=2)
  transformers.GPT2LMHeadModel(config).save_pretrained(str(tmp_path / "gpt2"))
  model, params, _ = convert.from_hf(str(tmp_path / "gpt2"))
  tokens = np.arange(1, 21, dtype=np.int32).reshape(2, 10)
  want = np.asarray(model.apply({"params": params}, tokens)["logits"])
  quantized = ptq.quantize_params(params, "int8", 0)
  got = np.asarray(model.apply({"params": quantized}, tokens)["logits"])
  # Stated tolerance: int8 per-channel weights move no logit by more than 1% of the largest.
  assert np.max(np.abs(got - want)) <= 0.01 * np.max(np.abs(want))
  assert ptq.tree_bytes(quantized) < ptq.tree_bytes(params)
