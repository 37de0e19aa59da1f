"""AWQ (Lin et al. 2024): scale each input channel of a kernel by s = mean|x|^alpha before
round-to-nearest, so that the channels the activations use most keep more precision, and
divide by s again when dequantizing (stored as the QuantizedArray's input_scales). alpha is
searched on a grid per layer for the smallest output error on the calibration inputs; alpha 0
is plain round-to-nearest, so AWQ's error is never above it on those inputs.
"""

import numpy as np

from llm_jax.compress import ptq
from llm_jax.peft import quantize

ALPHAS = tuple(np.linspace(0.0, 1.0, 11))


def output_error(x_NxC, w_CxF, w_hat_CxF) -> float:
  return float(np.mean(np.square(x_NxC @ (w_CxF - w_hat_CxF))))


def search(kernel, layer: str, x_NxC: np.ndarray, kind: str, group_size: int):
  """(best QuantizedArray, its error, round-to-nearest's error) over the alpha grid."""
  contract = ptq.contract_dims_for(layer)
  w_CxF = np.asarray(quantize.as_matrix(kernel, contract)).T
  x = np.asarray(x_NxC, np.float32)
  magnitude_C = np.mean(np.abs(x), axis=0) + 1e-8
  best, best_error, rtn_error = None, np.inf, None
  for alpha in ALPHAS:
    s_C = magnitude_C ** alpha
    s_C = s_C / np.sqrt(s_C.max() * s_C.min())
    q = quantize.quantize_channels(kernel, kind, group_size, contract, name=f"{layer}/kernel",
                                   input_scales=None if alpha == 0 else s_C)
    w_hat_CxF = np.asarray(quantize.as_matrix(quantize.dequantize(q), contract)).T
    error = output_error(x, w_CxF, w_hat_CxF)
    if alpha == 0:
      rtn_error = error
    if error < best_error:
      best, best_error = q, error
  return best, best_error, rtn_error


def quantizer(inputs: dict[str, np.ndarray]):
  """A ptq.quantize_params quantizer that runs the AWQ search on each layer."""

  def quantize_layer(kernel, layer, kind, group_size):
    if layer not in inputs:
      raise ValueError(f"AWQ: dense layer {layer!r} received no calibration input")
    return search(kernel, layer, inputs[layer], kind, group_size)[0]

  return quantize_layer
