"""GPTQ (Frantar et al. 2023): quantize a kernel's input rows one at a time, spreading each
row's rounding error over the rows not yet quantized through the inverse Hessian of the layer's
calibration inputs, H = 2 X^T X / N. Symmetric absmax grids as round-to-nearest uses; a group's
scales are taken from the (already updated) weights when the quantization reaches the group.
"""

import numpy as np

from llm_jax.compress import ptq
from llm_jax.peft import quantize


def hessian(x_NxC: np.ndarray) -> np.ndarray:
  x = np.asarray(x_NxC, np.float64)
  return 2.0 * x.T @ x / max(len(x), 1)


def gptq_matrix(w_CxF: np.ndarray, h_CxC: np.ndarray, kind: str, group_size: int,
                damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
  """(quantized W [C, F] on the grid, scales [F, C // group]) of W [C, F] under H [C, C]."""
  levels = quantize.LEVELS[kind]
  w = np.array(w_CxF, np.float64)
  c, f = w.shape
  group = c if group_size == 0 else group_size
  h = np.array(h_CxC, np.float64)
  dead = np.diag(h) == 0
  h[dead, dead] = 1.0
  w[dead] = 0.0
  h += damp * np.mean(np.diag(h)) * np.eye(c)
  # Upper Cholesky factor of H^-1: row i holds the updates of rows > i after row i rounds.
  u = np.linalg.cholesky(np.linalg.inv(h)).T
  q = np.zeros_like(w)
  scales = np.zeros((f, c // group))
  for i in range(c):
    if i % group == 0:
      absmax = np.max(np.abs(w[i:i + group]), axis=0)
      scales[:, i // group] = absmax
    s = np.where(scales[:, i // group] > 0, scales[:, i // group], 1.0)
    q[i] = np.clip(np.round(w[i] / s * levels), -levels, levels) * s / levels
    error = (w[i] - q[i]) / u[i, i]
    w[i + 1:] -= np.outer(u[i, i + 1:], error)
  return q, scales


def quantizer(inputs: dict[str, np.ndarray]):
  """A ptq.quantize_params quantizer that runs GPTQ on layers with calibration inputs."""

  def quantize_layer(kernel, layer, kind, group_size):
    if layer not in inputs:
      raise ValueError(f"GPTQ: dense layer {layer!r} received no calibration input")
    contract = ptq.contract_dims_for(layer)
    w_FxC = np.asarray(quantize.as_matrix(kernel, contract))
    w_CxF = w_FxC.T
    c = w_CxF.shape[0]
    if group_size and c % group_size:
      raise ValueError(f"{layer}/kernel: quantization group size {group_size} does not divide "
                       f"the contracted dimension {c} of the kernel of shape {np.shape(kernel)}")
    q_CxF, scales_FxG = gptq_matrix(w_CxF, hessian(inputs[layer]), kind, group_size)
    group = c if group_size == 0 else group_size
    safe_FxG = np.where(scales_FxG > 0, scales_FxG, 1.0)
    normalized_FxC = q_CxF.T / np.repeat(safe_FxG, group, axis=1)
    return quantize.QuantizedArray(
        codes=quantize.encode(normalized_FxC.astype(np.float32), kind),
        scales=scales_FxG.astype(np.float32), kind=kind, block_size=group,
        shape=tuple(np.shape(kernel)), dtype=np.dtype(np.asarray(kernel).dtype).name,
        contract_dims=contract)

  return quantize_layer
