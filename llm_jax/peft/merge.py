"""Folding LoRA and (IA)^3 into the base kernels: a plain model that convert.to_hf can export.

Per dense layer (kernel [*in, *out], with scan_layers a leading layers axis on every leaf):
  LoRA:   kernel += (lora_alpha / lora_rank) * lora_a . lora_b
  (IA)^3: output scaling: kernel *= scale over *out and bias *= scale (the model scales the
          output after the bias); input scaling (ia3_feedforward): kernel *= scale over *in.
Quantised (QLoRA) kernels are dequantised first.
"""

import copy
import re

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from llm_jax.models import lora
from llm_jax.peft import quantize

# peft methods that add computation no kernel can hold.
UNMERGEABLE = ("prefix_length", "prompt_length", "adapter_size")


def _value(x):
  x = x.unbox() if isinstance(x, nn.Partitioned) else x
  if isinstance(x, quantize.QuantizedArray):
    x = quantize.dequantize(x)
  return np.asarray(jax.device_get(x))


def _merge_layer(node: dict, path: str, peft) -> dict:
  node = dict(node)
  stacked = 1 if "layers" in path.split("/") else 0
  kernel = _value(node["kernel"])
  dtype = kernel.dtype
  kernel = kernel.astype(np.float32)
  lead = kernel.shape[:stacked]
  if "lora_a" in node or "lora_b" in node:
    if not ("lora_a" in node and "lora_b" in node):
      raise ValueError(f"dense layer {path!r} has only one of lora_a, lora_b")
    a = _value(node.pop("lora_a")).astype(np.float32)
    b = _value(node.pop("lora_b")).astype(np.float32)
    rank = a.shape[-1]
    if rank != peft.lora_rank:
      raise ValueError(f"dense layer {path!r}: lora_a has rank {rank}, model.peft.lora_rank="
                       f"{peft.lora_rank}")
    n_stack = int(np.prod(lead))
    a2 = a.reshape(n_stack, -1, rank)
    b2 = b.reshape(n_stack, rank, -1)
    delta = np.matmul(a2, b2) * np.float32(peft.lora_alpha / rank)
    kernel = kernel + delta.reshape(kernel.shape)
  if lora.IA3_PARAM in node:
    scale = _value(node.pop(lora.IA3_PARAM)).astype(np.float32)
    mode = lora.ia3_mode(peft, path)
    if mode is None:
      raise ValueError(f"dense layer {path!r} has an {lora.IA3_PARAM} but model.peft.ia3_targets="
                       f"{peft.ia3_targets!r} does not match it")
    if mode == "input":  # scale [*lead, *in]
      kernel = kernel * scale.reshape(scale.shape + (1,) * (kernel.ndim - scale.ndim))
    else:  # scale [*lead, *out]
      n_in = kernel.ndim - scale.ndim
      kernel = kernel * scale.reshape(lead + (1,) * n_in + scale.shape[stacked:])
      if "bias" in node:
        bias = _value(node["bias"])
        node["bias"] = (bias.astype(np.float32) * scale).astype(bias.dtype)
  node["kernel"] = kernel.astype(dtype)
  return node


def merge_peft(model_cfg, params):
  """(plain model config, plain params): LoRA and (IA)^3 folded into the kernels, their
  parameters dropped, quantised kernels dequantised; peft methods that cannot merge
  (prefix / prompt tuning, bottleneck adapters) raise a ValueError naming the field."""
  peft = model_cfg.peft
  for field in UNMERGEABLE:
    if peft.get(field, 0):
      raise ValueError(f"model.peft.{field}={peft[field]} cannot be merged into the base "
                       f"kernels; set it to 0 (or export the adapter with save_adapter)")

  def visit(node, path):
    if not isinstance(node, dict):
      return node
    if "kernel" in node and not isinstance(node["kernel"], dict):
      return _merge_layer(node, "/".join(path), peft)
    return {k: visit(v, path + (k,)) for k, v in node.items()}

  merged = visit(dict(params), ())
  plain = (model_cfg.as_configdict() if isinstance(model_cfg, ml_collections.FrozenConfigDict)
           else copy.deepcopy(model_cfg))
  plain.peft.lora_rank = 0
  plain.peft.ia3_targets = ""
  plain.peft.base_quantization = "none"
  leftover = [p for p in _paths(merged) if re.search(r"(^|/)(lora_a|lora_b|ia3_scale)$", p)]
  if leftover:
    raise ValueError(f"adapter parameters outside dense layers cannot be merged: {leftover}")
  return plain, merged


def _paths(tree, prefix=()):
  if not isinstance(tree, dict):
    return ["/".join(prefix)]
  return [p for k, v in tree.items() for p in _paths(v, prefix + (k,))]
