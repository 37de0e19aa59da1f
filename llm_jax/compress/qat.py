"""Quantization-aware training: the train step sees fake-quantized kernels (rounded to the
int8 / int4 grid of their per-channel or group absmax) and the gradient passes straight
through the rounding (Bengio et al. 2013; Jacob et al. 2018), zero outside the clipping range.
Enabled by config.quantization.qat; the float masters are what the optimizer updates.
"""

import functools

import jax
import jax.numpy as jnp

from llm_jax.compress import ptq
from llm_jax.peft import quantize


def ste_round(w, scales, kind: str):
  """w clipped to [-scales, scales] and rounded to the grid; d/dw = 1 inside the range."""
  clipped = jnp.clip(w, -scales, scales)
  return clipped + jax.lax.stop_gradient(quantize.fake_quantize(clipped, scales, kind) - clipped)


def fake_quantize_kernel(kernel, layer: str, kind: str, group_size: int):
  contract, lead = ptq.contract_dims_for(layer), ptq.lead_dims_for(layer)
  w_FxC = quantize.as_matrix(kernel, contract, lead)
  c = w_FxC.shape[-1]
  group = c if group_size == 0 else group_size
  if c % group:
    raise ValueError(f"{layer}/kernel: quantization.qat_group_size={group_size} does not "
                     f"divide the contracted dimension {c} of shape {kernel.shape}")
  blocks = w_FxC.reshape(*w_FxC.shape[:-1], c // group, group)
  scales = jax.lax.stop_gradient(jnp.max(jnp.abs(blocks), axis=-1, keepdims=True))
  w_hat_FxC = ste_round(blocks, scales, kind).reshape(w_FxC.shape)
  w_hat_CxF = jnp.swapaxes(w_hat_FxC, -1, -2)
  return w_hat_CxF.reshape(kernel.shape).astype(kernel.dtype)


def fake_quantize_params(params, kind: str, group_size: int, targets: str):
  kernels = ptq.dense_kernels(params, targets)
  return ptq.replace_kernels(params, {
      layer: fake_quantize_kernel(k, layer, kind, group_size) for layer, k in kernels.items()
      if not isinstance(k, quantize.QuantizedArray)})


def params_transform(cfg):
  """The train step's params hook for config.quantization.qat, or None when it is off."""
  section = cfg.get("quantization")
  if section is None or section.get("qat", "none") == "none":
    return None
  ptq.check_kind(section.qat, int(section.qat_group_size))
  return functools.partial(fake_quantize_params, kind=section.qat,
                           group_size=int(section.qat_group_size), targets=section.qat_targets)
