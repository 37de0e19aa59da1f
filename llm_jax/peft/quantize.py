"""Block-wise NF4 and int8 quantisation of kernels (the frozen base of QLoRA).

Blocks run along a kernel's last axis: block = min(block_size, shape[-1]) values share one
float32 scale, their absolute maximum. NF4 (QLoRA's 4-bit NormalFloat) stores each value as the
index of the nearest of 16 levels of [-1, 1] times the block's absmax, two codes per byte (the
first in the high nibble); int8 stores round(127 * value / absmax).

  nf4:  codes [*shape[:-1], shape[-1] // 2] uint8, scales [*shape[:-1], shape[-1] // block] f32
  int8: codes [*shape] int8,                       scales as nf4

A QuantizedArray is a pytree (codes and scales are its leaves), so it goes through jit and
through nn.scan, which slices the leading axis of both leaves: dequantize reads the leading
dimensions from the codes, not from the static `shape` (the shape when quantised).
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

KINDS = ("nf4", "int8")

# QLoRA's NF4 levels (Dettmers et al. 2023, bitsandbytes), ascending.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
_NF4_MIDPOINTS = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2


class QuantizedArray(struct.PyTreeNode):
  """A quantised array: `codes` and per-block `scales` (absmax), original shape and dtype."""
  codes: jax.Array
  scales: jax.Array
  kind: str = struct.field(pytree_node=False)
  block_size: int = struct.field(pytree_node=False)  # the block used: min(block_size, shape[-1])
  shape: tuple[int, ...] = struct.field(pytree_node=False)
  dtype: str = struct.field(pytree_node=False)

  @property
  def nbytes(self) -> int:
    return int(self.codes.size * self.codes.dtype.itemsize
               + self.scales.size * self.scales.dtype.itemsize)


def quantize(kernel, kind: str, block_size: int, name: str = "kernel") -> QuantizedArray:
  """Quantises `kernel` block-wise along its last axis; errors name the parameter `name`."""
  if kind not in KINDS:
    raise ValueError(f"{name}: unknown quantization {kind!r}; expected one of {KINDS}")
  x = jnp.asarray(kernel)
  if x.ndim == 0:
    raise ValueError(f"{name}: cannot quantize a scalar")
  n = x.shape[-1]
  if block_size <= 0:
    raise ValueError(f"{name}: quantization block size must be positive; got {block_size}")
  block = min(block_size, n)
  if n % block:
    raise ValueError(f"{name}: last dimension {n} of shape {tuple(x.shape)} is not a multiple "
                     f"of the quantization block size {block}")
  if kind == "nf4" and n % 2:
    raise ValueError(f"{name}: nf4 packs two codes per byte and needs an even last dimension; "
                     f"shape {tuple(x.shape)}")
  lead = x.shape[:-1]
  blocks = x.astype(jnp.float32).reshape(*lead, n // block, block)
  absmax = jnp.max(jnp.abs(blocks), axis=-1)
  normalized = blocks / jnp.where(absmax > 0, absmax, 1.0)[..., None]
  if kind == "nf4":
    idx = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), normalized).astype(jnp.uint8)
    idx = idx.reshape(*lead, n // 2, 2)
    codes = (idx[..., 0] << 4) | idx[..., 1]
  else:
    codes = jnp.clip(jnp.round(normalized * 127.0), -127, 127).astype(jnp.int8)
    codes = codes.reshape(*lead, n)
  return QuantizedArray(codes=codes, scales=absmax.astype(jnp.float32), kind=kind,
                        block_size=block, shape=tuple(x.shape), dtype=jnp.dtype(x.dtype).name)


def dequantize(q: QuantizedArray) -> jax.Array:
  """The array `q` approximates, in its original dtype (jittable)."""
  n = q.shape[-1]
  lead = q.codes.shape[:-1]
  if q.kind == "nf4":
    idx = jnp.stack([q.codes >> 4, q.codes & 15], axis=-1).reshape(*lead, n)
    values = jnp.asarray(NF4_LEVELS)[idx.astype(jnp.int32)]
  elif q.kind == "int8":
    values = q.codes.astype(jnp.float32) * (1.0 / 127.0)
  else:
    raise ValueError(f"unknown quantization {q.kind!r}; expected one of {KINDS}")
  values = values.reshape(*lead, n // q.block_size, q.block_size) * q.scales[..., None]
  return values.reshape(*lead, n).astype(q.dtype)


def _is_quantized(x) -> bool:
  return isinstance(x, QuantizedArray)


def quantize_tree(params, regex: str, kind: str, block_size: int):
  """`params` with each leaf named 'kernel' whose layer path (e.g.
  'decoder/layers_0/self_attention/query') matches `regex` replaced by a QuantizedArray."""
  pattern = re.compile(regex)

  def visit(node, path):
    if not isinstance(node, dict):
      return node
    out = {}
    for key, value in node.items():
      layer = "/".join(path)
      if key == "kernel" and not isinstance(value, dict) and pattern.search(layer):
        if isinstance(value, nn.Partitioned):
          value = value.unbox()
        if not _is_quantized(value):
          value = quantize(value, kind, block_size, name=f"{layer}/kernel")
        out[key] = value
      else:
        out[key] = visit(value, path + (key,))
    return out

  return visit(dict(params), ())


def dequantize_tree(tree):
  """`tree` with every QuantizedArray replaced by its dequantised array."""
  return jax.tree.map(lambda x: dequantize(x) if _is_quantized(x) else x, tree,
                      is_leaf=_is_quantized)


def quantize_base(model_cfg, params):
  """QLoRA: the kernels of model.peft.lora_targets quantised per model.peft.base_quantization."""
  peft = model_cfg.peft
  if peft.base_quantization == "none":
    return params
  if peft.base_quantization not in KINDS:
    raise ValueError(f"model.peft.base_quantization={peft.base_quantization!r} is not one of "
                     f"{('none', *KINDS)}")
  return quantize_tree(params, peft.lora_targets, peft.base_quantization,
                       peft.quantization_block_size)
