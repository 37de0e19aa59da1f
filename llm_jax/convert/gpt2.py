"""GPT-2 (`gpt2`): pre-LayerNorm decoder with learned positions and fused qkv.

GPT-2 stores its dense layers as Conv1D, whose weights are [in, out] (not torch Linear's
[out, in]); `c_attn` holds query, key and value side by side on the output axis.
"""

import numpy as np

from llm_jax import models
from llm_jax.convert.common import (
  ConversionError,
  check_tied_head,
  hf_field,
  require,
  sequence_classification_config,
  sequence_classification_labels,
  params_from_table,
  params_to_torch,
  unstack_layers,
)

HF_MODEL_TYPES = ("gpt2",)
IGNORED_TENSORS = (r"\.attn\.bias$", r"\.attn\.masked_bias$")  # causal-mask buffers

_ACTIVATIONS = {
  "relu": "relu",
  "gelu": "gelu",
  "gelu_new": "gelu_tanh",
  "gelu_pytorch_tanh": "gelu_tanh",
  "silu": "silu",
  "swish": "silu",
}
_ACTIVATION_FUNCTION = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}


def config_from_hf(hf_config: dict):
  activation = hf_field(hf_config, "activation_function", "gelu_new")
  if activation not in _ACTIVATIONS:
    raise ConversionError(
      f"config.json activation_function={activation!r} is not supported; "
      f"known: {sorted(_ACTIVATIONS)}"
    )
  for field in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
    if hf_config.get(field):
      raise ConversionError(f"config.json {field}=true is not supported")
  d_model = hf_field(hf_config, "n_embd")
  cfg = models.default_model_config()
  cfg.update(
    dict(
      hf_model_type="gpt2",
      family="decoder",
      attention="causal",
      vocab_size=hf_field(hf_config, "vocab_size"),
      d_model=d_model,
      num_layers=hf_field(hf_config, "n_layer"),
      num_heads=hf_field(hf_config, "n_head"),
      d_ff=hf_field(hf_config, "n_inner", 4 * d_model),
      activation=_ACTIVATIONS[activation],
      norm="layernorm",
      norm_eps=float(hf_field(hf_config, "layer_norm_epsilon", 1e-5)),
      norm_position="pre",
      use_bias=True,
      position="learned",
      max_len=hf_field(hf_config, "n_positions"),
      position_offset=0,
      scale_attention=bool(hf_config.get("scale_attn_weights", True)),
      # A *ForSequenceClassification checkpoint has no LM head; its (unused) token logits are
      # tied to the embedding.
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", True))
      or bool(sequence_classification_labels(hf_config)),
      final_norm=True,
      num_labels=sequence_classification_labels(hf_config),
      pad_token_id=hf_field(hf_config, "pad_token_id", 0),
      dropout_rate=float(hf_config.get("resid_pdrop", 0.1)),
      attention_dropout_rate=float(hf_config.get("attn_pdrop", 0.1)),
      init_std=float(hf_field(hf_config, "initializer_range", 0.02)),
    )
  )
  return cfg


def _table(cfg, prefix: str = "transformer.") -> list[tuple[tuple[str, ...], str, str]]:
  """(param path, torch name, layout) of every parameter but the fused attention ones."""
  rows = [
    (("token_embed", "embedding"), f"{prefix}wte.weight", "same"),
    (("decoder", "position_embed", "embedding"), f"{prefix}wpe.weight", "same"),
  ]
  for i in range(cfg.num_layers):
    layer, hf = ("decoder", f"layers_{i}"), f"{prefix}h.{i}."
    for ours, theirs in (("self_attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
      rows += [
        (layer + (ours, "scale"), f"{hf}{theirs}.weight", "same"),
        (layer + (ours, "bias"), f"{hf}{theirs}.bias", "same"),
      ]
    for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):  # Conv1D: already [in, out]
      rows += [
        (layer + ("mlp", ours, "kernel"), f"{hf}mlp.{theirs}.weight", "same"),
        (layer + ("mlp", ours, "bias"), f"{hf}mlp.{theirs}.bias", "same"),
      ]
    rows.append((layer + ("self_attention", "out", "bias"), f"{hf}attn.c_proj.bias", "same"))
  rows += [
    (("decoder", "final_norm", "scale"), f"{prefix}ln_f.weight", "same"),
    (("decoder", "final_norm", "bias"), f"{prefix}ln_f.bias", "same"),
  ]
  if not cfg.tie_embeddings:
    rows.append((("head", "lm_head", "kernel"), "lm_head.weight", "linear"))
  if cfg.num_labels:  # *ForSequenceClassification: the last token's `score` head
    rows.append((("classifier", "kernel"), "score.weight", "linear"))
  return rows


def params_from_hf(hf_config: dict, reader, cfg) -> dict:
  del hf_config
  prefix = "transformer." if reader.has("transformer.wte.weight") else ""
  params = params_from_table(cfg, _table(cfg, prefix), reader)
  d, h = cfg.d_model, cfg.num_heads
  for i in range(cfg.num_layers):
    hf = f"{prefix}h.{i}.attn."
    qkv_kernel_Dx3D = reader.take(hf + "c_attn.weight", (d, 3 * d))
    qkv_bias_3D = reader.take(hf + "c_attn.bias", (3 * d,))
    attention = params["decoder"][f"layers_{i}"]["self_attention"]
    for j, name in enumerate(("query", "key", "value")):
      attention[name] = {
        "kernel": qkv_kernel_Dx3D[:, j * d : (j + 1) * d].reshape(d, h, d // h),
        "bias": qkv_bias_3D[j * d : (j + 1) * d].reshape(h, d // h),
      }
    attention["out"]["kernel"] = reader.take(hf + "c_proj.weight", (d, d)).reshape(h, d // h, d)
  if cfg.tie_embeddings:
    check_tied_head(reader, "lm_head.weight", params["token_embed"]["embedding"])
  return params


def config_to_hf(cfg) -> dict:
  require(
    cfg,
    "Hugging Face 'gpt2'",
    **dict(
      family="decoder",
      attention="causal",
      norm="layernorm",
      norm_position="pre",
      position="learned",
      position_offset=0,
      activation=tuple(_ACTIVATION_FUNCTION),
      use_bias=True,
      num_kv_heads=(None, cfg.num_heads),
      head_dim=(None, cfg.d_model // cfg.num_heads),
      scale_embeddings=False,
      embedding_norm=False,
      final_norm=True,
      logits_scale_by_dmodel=False,
      final_logits_bias=False,
    ),
  )
  hf_config = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "vocab_size": cfg.vocab_size,
    "n_embd": cfg.d_model,
    "n_layer": cfg.num_layers,
    "n_head": cfg.num_heads,
    "n_inner": cfg.d_ff,
    "n_positions": cfg.max_len,
    "activation_function": _ACTIVATION_FUNCTION[cfg.activation],
    "layer_norm_epsilon": cfg.norm_eps,
    "scale_attn_weights": cfg.scale_attention,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": cfg.tie_embeddings,
    "pad_token_id": cfg.pad_token_id,
    "resid_pdrop": cfg.dropout_rate,
    "embd_pdrop": cfg.dropout_rate,
    "attn_pdrop": cfg.attention_dropout_rate,
    "initializer_range": cfg.init_std,
  }
  if cfg.num_labels:
    hf_config.update(sequence_classification_config(cfg, "GPT2ForSequenceClassification"))
  return hf_config


def params_to_hf(cfg, params) -> dict:
  params = unstack_layers(params)
  tensors = params_to_torch(_table(cfg), params)
  d = cfg.d_model
  for i in range(cfg.num_layers):
    attention = params["decoder"][f"layers_{i}"]["self_attention"]
    hf = f"transformer.h.{i}.attn."
    names = ("query", "key", "value")
    tensors[hf + "c_attn.weight"] = np.concatenate(
      [attention[n]["kernel"].reshape(d, d) for n in names], axis=1
    )
    tensors[hf + "c_attn.bias"] = np.concatenate([attention[n]["bias"].reshape(d) for n in names])
    tensors[hf + "c_proj.weight"] = attention["out"]["kernel"].reshape(d, d)
  return tensors
