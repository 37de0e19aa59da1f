"""LLaMA (`llama`): pre-RMSNorm decoder with RoPE, a gated MLP and grouped-query attention."""

from llm_jax import models
from llm_jax.models import moe
from llm_jax.convert.common import (
  ConversionError,
  check_tied_head,
  hf_field,
  require,
  sequence_classification_config,
  sequence_classification_labels,
  params_from_table,
  projection_rows,
  params_to_torch,
  unstack_layers,
)

HF_MODEL_TYPES = ("llama",)
IGNORED_TENSORS = (r"rotary_emb\.inv_freq$",)

# hidden_act of the gate branch -> our gated activation.
_GATED_ACTIVATIONS = {
  "silu": "swiglu",
  "swish": "swiglu",
  "gelu": "geglu",
  "gelu_new": "geglu_tanh",
  "gelu_pytorch_tanh": "geglu_tanh",
  "relu": "reglu",
}
_HIDDEN_ACT = {
  "swiglu": "silu",
  "geglu": "gelu",
  "geglu_tanh": "gelu_pytorch_tanh",
  "reglu": "relu",
}


def _rope_from_hf(hf_config: dict) -> tuple[str, float, float]:
  """(rope_scaling, factor, theta) from `rope_parameters` (transformers 5) or `rope_scaling`."""
  rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  theta = float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)))
  partial = rope.get("partial_rotary_factor", hf_config.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise ConversionError(
      f"config.json partial_rotary_factor={partial} is not supported "
      f"(RoPE on every head dimension only)"
    )
  if rope_type == "default":
    return "none", 1.0, theta
  if rope_type == "linear":
    return "linear", float(hf_field(rope, "factor")), theta
  raise ConversionError(
    f"config.json rope_parameters.rope_type={rope_type!r} is not supported "
    f"(only 'default' and 'linear')"
  )


def config_from_hf(hf_config: dict):
  hidden_act = hf_field(hf_config, "hidden_act", "silu")
  if hidden_act not in _GATED_ACTIVATIONS:
    raise ConversionError(
      f"config.json hidden_act={hidden_act!r} is not supported; known: {sorted(_GATED_ACTIVATIONS)}"
    )
  attention_bias = bool(hf_config.get("attention_bias", False))
  if bool(hf_config.get("mlp_bias", False)) != attention_bias:
    raise ConversionError(
      f"config.json mlp_bias={hf_config.get('mlp_bias')} differs from "
      f"attention_bias={attention_bias}; the model has one use_bias"
    )
  if hf_config.get("pretraining_tp", 1) not in (1, None):
    raise ConversionError(
      f"config.json pretraining_tp={hf_config['pretraining_tp']} is not supported (only 1)"
    )
  rope_scaling, rope_factor, rope_theta = _rope_from_hf(hf_config)
  d_model = hf_field(hf_config, "hidden_size")
  num_heads = hf_field(hf_config, "num_attention_heads")
  cfg = models.default_model_config()
  cfg.update(
    dict(
      hf_model_type="llama",
      family="decoder",
      attention="causal",
      vocab_size=hf_field(hf_config, "vocab_size"),
      d_model=d_model,
      num_layers=hf_field(hf_config, "num_hidden_layers"),
      num_heads=num_heads,
      num_kv_heads=hf_field(hf_config, "num_key_value_heads", num_heads),
      head_dim=hf_field(hf_config, "head_dim", d_model // num_heads),
      d_ff=hf_field(hf_config, "intermediate_size"),
      activation=_GATED_ACTIVATIONS[hidden_act],
      norm="rmsnorm",
      norm_eps=float(hf_field(hf_config, "rms_norm_eps", 1e-6)),
      norm_position="pre",
      use_bias=attention_bias,
      position="rope",
      max_len=hf_field(hf_config, "max_position_embeddings", 2048),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      rope_scaling_factor=rope_factor,
      scale_attention=True,
      # A *ForSequenceClassification checkpoint has no LM head; its (unused) token logits are
      # tied to the embedding.
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", False))
      or bool(sequence_classification_labels(hf_config)),
      final_norm=True,
      num_labels=sequence_classification_labels(hf_config),
      pad_token_id=hf_field(hf_config, "pad_token_id", 0),
      dropout_rate=0.0,
      attention_dropout_rate=float(hf_config.get("attention_dropout", 0.0)),
      init_std=float(hf_field(hf_config, "initializer_range", 0.02)),
    )
  )
  return cfg


ATTENTION_PROJECTIONS = (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))
MLP_PROJECTIONS = (("wi_0", "gate_proj"), ("wi_1", "up_proj"), ("wo", "down_proj"))
# Mixtral's experts: w1 gate, w3 up, w2 down; their per-expert tensors are stacked over experts
# under these names by stack_experts.
EXPERT_PROJECTIONS = (("wi_0", "w1"), ("wi_1", "w3"), ("wo", "w2"))


def attention_rows(cfg, ours: tuple, hf: str) -> list:
  return (projection_rows(ours, hf, ATTENTION_PROJECTIONS, "heads", "flat", cfg.use_bias)
          + projection_rows(ours, hf, (("out", "o_proj"),), "out", "same", cfg.use_bias))


def expert_rows(cfg, ours: tuple, hf: str) -> list:
  """Router and stacked experts of one MoE layer (Mixtral's block_sparse_moe)."""
  del cfg
  rows = [(ours + ("router",), f"{hf}gate.weight", "linear")]
  rows += [(ours + (name,), f"{hf}experts.{theirs}", "experts")
           for name, theirs in EXPERT_PROJECTIONS]
  return rows


def _table(cfg, prefix: str = "model.") -> list[tuple[tuple[str, ...], str, str]]:
  """(param path, torch name, layout) of every parameter."""
  rows = [
    (("token_embed", "embedding"), f"{prefix}embed_tokens.weight", "same"),
    (("decoder", "final_norm", "scale"), f"{prefix}norm.weight", "same"),
  ]
  for i in range(cfg.num_layers):
    layer, hf = ("decoder", f"layers_{i}"), f"{prefix}layers.{i}."
    rows += [
      (layer + ("self_attention_norm", "scale"), hf + "input_layernorm.weight", "same"),
      (layer + ("mlp_norm", "scale"), hf + "post_attention_layernorm.weight", "same"),
    ]
    rows += attention_rows(cfg, layer + ("self_attention",), f"{hf}self_attn.")
    if not moe.is_moe_layer(cfg, i):
      rows += projection_rows(layer + ("mlp",), f"{hf}mlp.", MLP_PROJECTIONS, "linear", "same",
                              cfg.use_bias)
    else:
      rows += expert_rows(cfg, layer + ("moe",), f"{hf}block_sparse_moe.")
  if not cfg.tie_embeddings:
    rows.append((("head", "lm_head", "kernel"), "lm_head.weight", "linear"))
  if cfg.num_labels:  # *ForSequenceClassification: the last token's `score` head
    rows.append((("classifier", "kernel"), "score.weight", "linear"))
  return rows


def params_from_hf(hf_config: dict, reader, cfg) -> dict:
  del hf_config
  prefix = "model." if reader.has("model.embed_tokens.weight") else ""
  params = params_from_table(cfg, _table(cfg, prefix), reader)
  if cfg.tie_embeddings:
    check_tied_head(reader, "lm_head.weight", params["token_embed"]["embedding"])
  return params


def config_to_hf(cfg) -> dict:
  if cfg.moe.num_experts or cfg.sliding_window:
    raise ConversionError(
      f"model.moe.num_experts={cfg.moe.num_experts} / model.sliding_window={cfg.sliding_window} "
      "cannot be exported as Hugging Face 'llama'; use hf_model_type 'mixtral' or 'mistral'"
    )
  return decoder_config_to_hf(cfg, "llama")


def decoder_config_to_hf(cfg, model_type: str) -> dict:
  """config.json fields shared by the LLaMA-style decoders (llama, mistral, mixtral)."""
  require(
    cfg,
    f"Hugging Face {model_type!r}",
    **dict(
      family="decoder",
      attention="causal",
      norm="rmsnorm",
      norm_position="pre",
      position="rope",
      activation=tuple(_HIDDEN_ACT),
      scale_attention=True,
      scale_embeddings=False,
      embedding_norm=False,
      final_norm=True,
      logits_scale_by_dmodel=False,
      final_logits_bias=False,
    ),
  )
  head_dim = cfg.head_dim or cfg.d_model // cfg.num_heads
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling == "linear":
    rope = {"rope_type": "linear", "factor": cfg.rope_scaling_factor, "rope_theta": cfg.rope_theta}
  elif cfg.rope_scaling == "ntk":  # static NTK scaling is RoPE with a larger base
    rope["rope_theta"] = cfg.rope_theta * cfg.rope_scaling_factor ** (head_dim / (head_dim - 2))
  hf_config = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads or cfg.num_heads,
    "head_dim": head_dim,
    "intermediate_size": cfg.d_ff,
    "hidden_act": _HIDDEN_ACT[cfg.activation],
    "rms_norm_eps": cfg.norm_eps,
    "max_position_embeddings": cfg.max_len,
    "rope_parameters": rope,
    "attention_bias": cfg.use_bias,
    "mlp_bias": cfg.use_bias,
    "tie_word_embeddings": cfg.tie_embeddings,
    "pad_token_id": cfg.pad_token_id,
    "attention_dropout": cfg.attention_dropout_rate,
    "initializer_range": cfg.init_std,
  }
  if cfg.num_labels:
    hf_config.update(sequence_classification_config(cfg, "LlamaForSequenceClassification"))
  return hf_config


def params_to_hf(cfg, params) -> dict:
  return params_to_torch(_table(cfg), unstack_layers(params))
