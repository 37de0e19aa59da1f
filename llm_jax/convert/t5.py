"""T5 (`t5`) v1.0 and v1.1: pre-RMSNorm encoder-decoder with bucketed relative position biases.

v1.0 ties the LM head to the shared embedding and scales the decoder output by d_model**-0.5
before it; v1.1 has a separate `lm_head.weight`, no scaling and a gated-GELU MLP. transformers 5
records the scaling as `scale_decoder_outputs` (and always writes tie_word_embeddings=true,
untying when the checkpoint holds a different lm_head); transformers 4 as tie_word_embeddings.
"""

import numpy as np

from llm_jax import models
from llm_jax.convert.common import (
  ConversionError,
  check_tied_head,
  hf_field,
  require,
  params_from_table,
  params_to_torch,
  unstack_layers,
)

HF_MODEL_TYPES = ("t5",)
IGNORED_TENSORS = (
  r"^(encoder|decoder)\.embed_tokens\.weight$",  # copies of shared.weight
  r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias",
)

# dense_act_fn -> our activation, and the gated variants.
_ACTIVATIONS = {
  "relu": "relu",
  "gelu": "gelu",
  "gelu_new": "gelu_tanh",
  "gelu_pytorch_tanh": "gelu_tanh",
  "silu": "silu",
  "swish": "silu",
}
_GATED = {"relu": "reglu", "gelu": "geglu", "gelu_tanh": "geglu_tanh", "silu": "swiglu"}
# Our activation -> feed_forward_proj ('gated-gelu' means tanh-approximate GELU in transformers).
_FEED_FORWARD_PROJ = {
  "relu": "relu",
  "gelu": "gelu",
  "gelu_tanh": "gelu_new",
  "silu": "silu",
  "reglu": "gated-relu",
  "geglu_tanh": "gated-gelu",
  "swiglu": "gated-silu",
}


def _activation_from_hf(hf_config: dict) -> str:
  proj = hf_field(hf_config, "feed_forward_proj", "relu")
  parts = proj.split("-")
  gated = len(parts) == 2 and parts[0] == "gated"
  base = "gelu_new" if proj == "gated-gelu" else parts[-1]
  if len(parts) > 2 or (len(parts) == 2 and not gated) or base not in _ACTIVATIONS:
    raise ConversionError(
      f"config.json feed_forward_proj={proj!r} is not supported; expected "
      f"one of {sorted(_ACTIVATIONS)}, optionally prefixed 'gated-'"
    )
  activation = _ACTIVATIONS[base]
  return _GATED[activation] if gated else activation


def config_from_hf(hf_config: dict):
  scale_logits = bool(
    hf_config.get("scale_decoder_outputs", hf_config.get("tie_word_embeddings", True))
  )
  num_layers = hf_field(hf_config, "num_layers")
  cfg = models.default_model_config()
  cfg.update(
    dict(
      hf_model_type="t5",
      family="encoder_decoder",
      vocab_size=hf_field(hf_config, "vocab_size"),
      d_model=hf_field(hf_config, "d_model"),
      num_layers=num_layers,
      num_decoder_layers=hf_field(hf_config, "num_decoder_layers", num_layers),
      num_heads=hf_field(hf_config, "num_heads"),
      head_dim=hf_field(hf_config, "d_kv"),
      d_ff=hf_field(hf_config, "d_ff"),
      activation=_activation_from_hf(hf_config),
      norm="rmsnorm",
      norm_eps=float(hf_field(hf_config, "layer_norm_epsilon", 1e-6)),
      norm_position="pre",
      use_bias=False,
      position="t5_relative",
      relative_num_buckets=hf_field(hf_config, "relative_attention_num_buckets", 32),
      relative_max_distance=hf_field(hf_config, "relative_attention_max_distance", 128),
      max_len=hf_field(hf_config, "n_positions", 512),
      scale_attention=False,
      tie_embeddings=scale_logits,
      logits_scale_by_dmodel=scale_logits,
      final_norm=True,
      pad_token_id=hf_field(hf_config, "pad_token_id", 0),
      decoder_start_token_id=hf_field(
        hf_config, "decoder_start_token_id", hf_field(hf_config, "pad_token_id", 0)
      ),
      dropout_rate=float(hf_config.get("dropout_rate", 0.1)),
      attention_dropout_rate=0.0,
    )
  )
  return cfg


def _stack_rows(stack: str, num_layers: int, gated: bool, cross: bool):
  rows = [
    (
      (stack, "relpos_bias"),
      f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
      "same",
    ),
    ((stack, "final_norm", "scale"), f"{stack}.final_layer_norm.weight", "same"),
  ]
  blocks = [("self_attention", "SelfAttention")] + (
    [("cross_attention", "EncDecAttention")] if cross else []
  )
  for i in range(num_layers):
    layer, hf = (stack, f"layers_{i}"), f"{stack}.block.{i}.layer."
    for j, (ours, theirs) in enumerate(blocks):
      rows.append((layer + (f"{ours}_norm", "scale"), f"{hf}{j}.layer_norm.weight", "same"))
      for p, t, layout in (
        ("query", "q", "heads"),
        ("key", "k", "heads"),
        ("value", "v", "heads"),
        ("out", "o", "out"),
      ):
        rows.append((layer + (ours, p, "kernel"), f"{hf}{j}.{theirs}.{t}.weight", layout))
    j = len(blocks)
    rows.append((layer + ("mlp_norm", "scale"), f"{hf}{j}.layer_norm.weight", "same"))
    for p in ("wi_0", "wi_1", "wo") if gated else ("wi", "wo"):
      rows.append((layer + ("mlp", p, "kernel"), f"{hf}{j}.DenseReluDense.{p}.weight", "linear"))
  return rows


def _table(cfg) -> list[tuple[tuple[str, ...], str, str]]:
  """(param path, torch name, layout) of every parameter but the untied LM head."""
  gated = cfg.activation in _GATED.values()
  return (
    [(("token_embed", "embedding"), "shared.weight", "same")]
    + _stack_rows("encoder", cfg.num_layers, gated, cross=False)
    + _stack_rows("decoder", cfg.num_decoder_layers or cfg.num_layers, gated, cross=True)
  )


def params_from_hf(hf_config: dict, reader, cfg) -> dict:
  del hf_config
  params = params_from_table(cfg, _table(cfg), reader)
  embedding_VxD = params["token_embed"]["embedding"]
  if cfg.tie_embeddings:
    check_tied_head(reader, "lm_head.weight", embedding_VxD)
  else:  # A checkpoint without lm_head.weight ties it to shared.weight.
    head_VxD = (
      reader.take("lm_head.weight", embedding_VxD.shape)
      if reader.has("lm_head.weight")
      else embedding_VxD
    )
    params["head"] = {"lm_head": {"kernel": np.ascontiguousarray(head_VxD.T)}}
  return params


def config_to_hf(cfg) -> dict:
  require(
    cfg,
    "Hugging Face 't5'",
    **dict(
      family="encoder_decoder",
      norm="rmsnorm",
      norm_position="pre",
      position="t5_relative",
      activation=tuple(_FEED_FORWARD_PROJ),
      use_bias=False,
      num_kv_heads=(None, cfg.num_heads),
      scale_attention=False,
      scale_embeddings=False,
      embedding_norm=False,
      final_norm=True,
      final_logits_bias=False,
    ),
  )
  return {
    "architectures": ["T5ForConditionalGeneration"],
    "model_type": "t5",
    "is_encoder_decoder": True,
    "vocab_size": cfg.vocab_size,
    "d_model": cfg.d_model,
    "d_kv": cfg.head_dim or cfg.d_model // cfg.num_heads,
    "d_ff": cfg.d_ff,
    "num_layers": cfg.num_layers,
    "num_decoder_layers": cfg.num_decoder_layers or cfg.num_layers,
    "num_heads": cfg.num_heads,
    "feed_forward_proj": _FEED_FORWARD_PROJ[cfg.activation],
    "layer_norm_epsilon": cfg.norm_eps,
    "relative_attention_num_buckets": cfg.relative_num_buckets,
    "relative_attention_max_distance": cfg.relative_max_distance,
    "tie_word_embeddings": cfg.tie_embeddings,
    "scale_decoder_outputs": cfg.logits_scale_by_dmodel,
    "pad_token_id": cfg.pad_token_id,
    "decoder_start_token_id": cfg.decoder_start_token_id,
    "dropout_rate": cfg.dropout_rate,
  }


def params_to_hf(cfg, params) -> dict:
  params = unstack_layers(params)
  tensors = params_to_torch(_table(cfg), params)
  if not cfg.tie_embeddings:
    tensors["lm_head.weight"] = np.ascontiguousarray(params["head"]["lm_head"]["kernel"].T)
  return tensors
