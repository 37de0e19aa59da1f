"""Block-wise NF4 and int8 quantisation of kernels (the frozen base of QLoRA).

Blocks run along a kernel's last axis: block = min(block_size, shape[-1]) values share one
float32 scale, their absolute maximum. NF4 (QLoRA's 4-bit NormalFloat) stores each value as the
index of the nearest of 16 levels of [-1, 1] times the block's absmax, two codes per byte (the
first in the high nibble); int8 stores round(127 * value / absmax).

  nf4:  codes [*shape[:-1], shape[-1] // 2] uint8, scales [*shape[:-1], shape[-1] // block] f32
  int8: codes [*shape] int8,                       scales as nf4
  int4: codes as nf4 (round(7 * value / absmax) + 8 in each nibble), scales as nf4

Post-training quantization (`quantize_channels`, llm_jax.compress) stores a dense kernel
[*lead, *contracted, *features] as the matrix [*lead, F, C] (F features, C contracted values,
as a PyTorch Linear stores [out, in]) with the blocks along C: one scale per output channel
(block = C) or per group of C. `contract_dims` says how many kernel axes were contracted (0: the
plain layout above), `lead_dims` how many leading axes were stacked (nn.scan's layers), and
AWQ's optional `input_scales` [*lead, C] divide the dequantised rows again.

A QuantizedArray is a pytree (codes and scales are its leaves), so it goes through jit and
through nn.scan, which slices the leading axis of both leaves: dequantize reads the leading
dimensions from the codes, not from the static `shape` (the shape when quantised).
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

KINDS = ("nf4", "int8", "int4")
# Largest code magnitude of the symmetric integer kinds: value = code / LEVELS * absmax.
LEVELS = {"int8": 127, "int4": 7}

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
  contract_dims: int = struct.field(pytree_node=False, default=0)
  lead_dims: int = struct.field(pytree_node=False, default=0)
  input_scales: jax.Array | None = None

  @property
  def nbytes(self) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self)))


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
  if kind in ("nf4", "int4") and n % 2:
    raise ValueError(f"{name}: {kind} packs two codes per byte and needs an even last dimension; "
                     f"shape {tuple(x.shape)}")
  lead = x.shape[:-1]
  blocks = x.astype(jnp.float32).reshape(*lead, n // block, block)
  absmax = jnp.max(jnp.abs(blocks), axis=-1)
  normalized = blocks / jnp.where(absmax > 0, absmax, 1.0)[..., None]
  codes = encode(normalized.reshape(*lead, n), kind)
  return QuantizedArray(codes=codes, scales=absmax.astype(jnp.float32), kind=kind,
                        block_size=block, shape=tuple(x.shape), dtype=jnp.dtype(x.dtype).name)


def encode(normalized, kind: str) -> jax.Array:
  """Codes of values in [-1, 1] (absmax-normalised), packed along the last axis for 4 bits."""
  if kind == "nf4":
    idx = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), normalized).astype(jnp.uint8)
  elif kind == "int4":
    idx = (jnp.clip(jnp.round(normalized * LEVELS["int4"]), -7, 7) + 8).astype(jnp.uint8)
  else:
    return jnp.clip(jnp.round(normalized * 127.0), -127, 127).astype(jnp.int8)
  idx = idx.reshape(*idx.shape[:-1], idx.shape[-1] // 2, 2)
  return (idx[..., 0] << 4) | idx[..., 1]


def decode(codes, kind: str) -> jax.Array:
  """The normalised float32 values in [-1, 1] of `codes` (unpacked along the last axis)."""
  if kind in ("nf4", "int4"):
    idx = jnp.stack([codes >> 4, codes & 15], axis=-1)
    idx = idx.reshape(*codes.shape[:-1], 2 * codes.shape[-1]).astype(jnp.int32)
    if kind == "nf4":
      return jnp.asarray(NF4_LEVELS)[idx]
    return (idx - 8).astype(jnp.float32) * (1.0 / LEVELS["int4"])
  if kind == "int8":
    return codes.astype(jnp.float32) * (1.0 / 127.0)
  raise ValueError(f"unknown quantization {kind!r}; expected one of {KINDS}")


def dequantize(q: QuantizedArray) -> jax.Array:
  """The array `q` approximates, in its original dtype (jittable)."""
  values = decode(q.codes, q.kind)
  lead, n = values.shape[:-1], values.shape[-1]
  values = values.reshape(*lead, n // q.block_size, q.block_size) * q.scales[..., None]
  values = values.reshape(*lead, n)
  if not q.contract_dims:
    return values.astype(q.dtype)
  if q.input_scales is not None:
    values = values / q.input_scales[..., None, :]
  matrix_CxF = jnp.swapaxes(values, -1, -2)
  return matrix_CxF.reshape(*matrix_CxF.shape[:-2], *q.shape[q.lead_dims:]).astype(q.dtype)


def as_matrix(kernel, contract_dims: int, lead_dims: int = 0) -> jax.Array:
  """kernel [*lead, *contracted, *features] -> [*lead, F, C], the layout of quantize_channels."""
  x = jnp.asarray(kernel)
  kernel_shape = x.shape[lead_dims:]
  c = math.prod(kernel_shape[:contract_dims])
  matrix_CxF = x.reshape(*x.shape[:lead_dims], c, math.prod(kernel_shape[contract_dims:]))
  return jnp.swapaxes(matrix_CxF, -1, -2)


def quantize_channels(kernel, kind: str, group_size: int, contract_dims: int,
                      lead_dims: int = 0, name: str = "kernel",
                      input_scales=None) -> QuantizedArray:
  """Weight-only PTQ of a dense kernel: one absmax scale per output channel (group_size 0) or
  per group of `group_size` contracted values. `input_scales` (AWQ) [*lead, C] multiply the
  kernel's rows before quantisation and divide them again when dequantised."""
  if kind not in LEVELS:
    raise ValueError(f"{name}: weight-only quantization is {tuple(LEVELS)}; got {kind!r}")
  x = jnp.asarray(kernel)
  if not 0 < contract_dims < x.ndim - lead_dims:
    raise ValueError(f"{name}: contract_dims={contract_dims} does not fit a kernel of shape "
                     f"{tuple(x.shape)} with {lead_dims} stacked leading axes")
  matrix_FxC = as_matrix(x.astype(jnp.float32), contract_dims, lead_dims)
  c = matrix_FxC.shape[-1]
  group = c if group_size == 0 else group_size
  if group < 0 or c % group:
    raise ValueError(f"{name}: quantization group size {group_size} does not divide the "
                     f"contracted dimension {c} of the kernel of shape {tuple(x.shape)}")
  if input_scales is not None:
    matrix_FxC = matrix_FxC * jnp.asarray(input_scales, jnp.float32)[..., None, :]
  q = quantize(matrix_FxC, kind, group, name=name)
  return q.replace(shape=tuple(x.shape), dtype=jnp.dtype(x.dtype).name,
                   contract_dims=contract_dims, lead_dims=lead_dims,
                   input_scales=None if input_scales is None else
                   jnp.asarray(input_scales, jnp.float32))


def fake_quantize(values, scales, kind: str):
  """values rounded to the grid of `kind` given their absmax `scales` (broadcastable)."""
  levels = LEVELS[kind]
  safe = jnp.where(scales > 0, scales, 1.0)
  return jnp.clip(jnp.round(values / safe * levels), -levels, levels) * (safe / levels)


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
