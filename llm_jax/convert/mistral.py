"""Mistral (`mistral`): the LLaMA decoder with sliding-window attention (model.sliding_window:
a query at position i attends keys i-window+1..i; None in config.json = full attention)."""

from llm_jax.convert import llama
from llm_jax.convert.common import params_to_torch, require, unstack_layers

HF_MODEL_TYPES = ("mistral",)
IGNORED_TENSORS = llama.IGNORED_TENSORS


def config_from_hf(hf_config: dict):
  cfg = llama.config_from_hf(hf_config)
  cfg.hf_model_type = "mistral"
  cfg.sliding_window = int(hf_config.get("sliding_window") or 0)
  return cfg


def params_from_hf(hf_config: dict, reader, cfg) -> dict:
  return llama.params_from_hf(hf_config, reader, cfg)


def config_to_hf(cfg) -> dict:
  require(cfg, "Hugging Face 'mistral'", use_bias=False, sliding_window_layers="all")
  require(cfg.moe, "Hugging Face 'mistral' (model.moe)", num_experts=0)
  hf_config = llama.decoder_config_to_hf(cfg, "mistral")
  for field in ("attention_bias", "mlp_bias"):
    hf_config.pop(field)
  architecture = ("MistralForSequenceClassification" if cfg.num_labels else "MistralForCausalLM")
  hf_config.update({"architectures": [architecture], "model_type": "mistral",
                    "sliding_window": cfg.sliding_window or None})
  return hf_config


def params_to_hf(cfg, params) -> dict:
  return params_to_torch(llama._table(cfg), unstack_layers(params))  # pylint: disable=protected-access
