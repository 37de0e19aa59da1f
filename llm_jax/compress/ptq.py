"""Weight-only post-training quantization of a params tree: which kernels, their layout, bytes.

`quantize_params` replaces every dense kernel whose layer path matches `targets` by a
QuantizedArray (per-channel or group-wise scales). Round-to-nearest needs nothing else; GPTQ
and AWQ pass a per-layer `quantizer` that sees the layer's calibration inputs.
"""

import re
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from llm_jax.peft import quantize

WEIGHT_KINDS = tuple(quantize.LEVELS)


def contract_dims_for(layer: str) -> int:
  """Kernel axes a dense layer contracts: attention's output projection contracts heads and
  head_dim ([heads, head_dim, embed]); every other dense layer contracts its first axis."""
  return 2 if re.search(r"attention/out$", layer) else 1


def lead_dims_for(layer: str) -> int:
  """1 for kernels stacked by nn.scan (a 'layers' scope in the path), else 0."""
  return 1 if "layers" in layer.split("/") else 0


def check_kind(kind: str, group_size: int) -> None:
  if kind not in WEIGHT_KINDS:
    raise ValueError(f"quantization.weights={kind!r}: expected one of {WEIGHT_KINDS}")
  if group_size < 0:
    raise ValueError(f"quantization.group_size={group_size}: expected 0 (per channel) or > 0")


def dense_kernels(params, targets: str) -> dict[str, np.ndarray]:
  """{layer path: kernel} of every dense kernel whose layer path matches `targets`."""
  pattern = re.compile(targets)
  out = {}

  def visit(node, path):
    for key, value in node.items():
      if key == "kernel" and not isinstance(value, dict):
        layer = "/".join(path)
        if pattern.search(layer):
          out[layer] = value.unbox() if isinstance(value, nn.Partitioned) else value
      elif isinstance(value, dict):
        visit(value, path + (key,))

  visit(params, ())
  return out


def rtn(kernel, layer: str, kind: str, group_size: int) -> quantize.QuantizedArray:
  return quantize.quantize_channels(kernel, kind, group_size, contract_dims_for(layer),
                                    lead_dims_for(layer), name=f"{layer}/kernel")


def quantize_params(params, kind: str, group_size: int, targets: str = ".",
                    quantizer: Callable | None = None, progress: bool = False):
  """`params` with the targeted kernels as QuantizedArrays. quantizer(kernel, layer, kind,
  group_size) -> QuantizedArray defaults to round-to-nearest."""
  check_kind(kind, group_size)
  quantizer = quantizer or rtn
  kernels = dense_kernels(params, targets)
  if not kernels:
    raise ValueError(f"quantization.targets={targets!r} matches no dense layer")
  items = kernels.items()
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    items = tqdm.tqdm(items, desc=f"quantizing to {kind}", unit="layer")
  quantized = {layer: quantizer(kernel, layer, kind, group_size) for layer, kernel in items}
  return replace_kernels(params, quantized)


def replace_kernels(params, kernels: dict):
  """A copy of `params` with params[layer]['kernel'] = kernels[layer]."""
  out = _copy_dicts(params)
  for layer, kernel in kernels.items():
    node = out
    for key in layer.split("/"):
      node = node[key]
    node["kernel"] = kernel
  return out


def _copy_dicts(tree):
  if isinstance(tree, dict):
    return {k: _copy_dicts(v) for k, v in tree.items()}
  return tree


def tree_bytes(params) -> int:
  """Bytes of every array in `params` (a QuantizedArray counts its codes and scales)."""
  return int(sum(np.asarray(x).nbytes if not hasattr(x, "nbytes") else x.nbytes
                 for x in jax.tree.leaves(params)))
