"""Mixtral (`mixtral`): the LLaMA decoder with a sparse MoE block (softmax top-k router,
renormalised gates, SwiGLU experts) in every layer, optionally with a sliding window.

The checkpoint stores each expert's kernels apart (`block_sparse_moe.experts.{e}.w1.weight`);
`stack_experts` / `unstack_experts` turn them into / from one [experts, out, in] tensor per
projection so that the parameter table maps each of them to one model parameter.
"""

import re

import numpy as np

from llm_jax.convert import llama
from llm_jax.convert.common import ConversionError, hf_field, params_to_torch, require, unstack_layers

HF_MODEL_TYPES = ("mixtral",)
IGNORED_TENSORS = llama.IGNORED_TENSORS

_EXPERT = re.compile(r"^(.*block_sparse_moe\.experts\.)(\d+)\.(w[123])\.weight$")


def config_from_hf(hf_config: dict):
  if float(hf_config.get("router_jitter_noise", 0.0) or 0.0) != 0.0:
    raise ConversionError(
      f"config.json router_jitter_noise={hf_config['router_jitter_noise']} is not supported (only 0)"
    )
  cfg = llama.config_from_hf(hf_config)
  cfg.hf_model_type = "mixtral"
  cfg.sliding_window = int(hf_config.get("sliding_window") or 0)
  cfg.moe.update(dict(
    num_experts=hf_field(hf_config, "num_local_experts"),
    top_k=hf_field(hf_config, "num_experts_per_tok"),
    router="topk",
    normalize_top_k=True,
    capacity_factor=0.0,
    load_balance_coef=float(hf_config.get("router_aux_loss_coef", 0.001)),
    z_loss_coef=0.0,
  ))
  return cfg


def stack_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-expert tensors -> `...experts.w1` [experts, out, in] (and w2, w3)."""
  out, stacks = {}, {}
  for name, array in tensors.items():
    match = _EXPERT.match(name)
    if match is None:
      out[name] = array
    else:
      stacks.setdefault(match[1] + match[3], {})[int(match[2])] = array
  for name, by_expert in stacks.items():
    if sorted(by_expert) != list(range(len(by_expert))):
      raise ConversionError(f"{name}: expert tensors {sorted(by_expert)} are not 0..n-1")
    out[name] = np.stack([by_expert[e] for e in range(len(by_expert))])
  return out


def unstack_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for name, array in tensors.items():
    if re.search(r"block_sparse_moe\.experts\.w[123]$", name):
      prefix, projection = name.rsplit(".", 1)
      for e, kernel in enumerate(array):
        out[f"{prefix}.{e}.{projection}.weight"] = np.ascontiguousarray(kernel)
    else:
      out[name] = array
  return out


prepare_tensors = stack_experts


def params_from_hf(hf_config: dict, reader, cfg) -> dict:
  return llama.params_from_hf(hf_config, reader, cfg)


def config_to_hf(cfg) -> dict:
  target = "Hugging Face 'mixtral'"
  require(cfg, target, use_bias=False, num_labels=0, sliding_window_layers="all")
  require(cfg.moe, target + " (model.moe)", router="topk", normalize_top_k=True,
          capacity_factor=(0.0, None), every=1, offset=0, num_shared_experts=0,
          d_ff=(None, cfg.d_ff))
  if cfg.moe.num_experts < 1:
    raise ConversionError(f"model.moe.num_experts={cfg.moe.num_experts}: Mixtral needs experts")
  hf_config = llama.decoder_config_to_hf(cfg, "mixtral")
  for field in ("attention_bias", "mlp_bias"):
    hf_config.pop(field)
  hf_config.update({
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "num_local_experts": cfg.moe.num_experts,
    "num_experts_per_tok": cfg.moe.top_k,
    "router_aux_loss_coef": cfg.moe.load_balance_coef,
    "router_jitter_noise": 0.0,
    "sliding_window": cfg.sliding_window or None,
  })
  return hf_config


def params_to_hf(cfg, params) -> dict:
  return unstack_experts(params_to_torch(llama._table(cfg), unstack_layers(params)))  # pylint: disable=protected-access
