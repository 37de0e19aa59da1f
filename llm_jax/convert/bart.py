"""BART <-> the encoder-decoder model (post-LN, learned positions offset by 2, embedding norms).

Encoder and decoder share one token embedding (`shared`); the LM head is tied to it unless
tie_word_embeddings=False, and adds the `final_logits_bias` buffer. A bare BartModel (no LM
head) converts with a tied head and a zero final_logits_bias.
"""

import numpy as np

from llm_jax import models
from llm_jax.convert import common
from llm_jax.convert.common import ConversionError

HF_MODEL_TYPES = ("bart",)
IGNORED_TENSORS = ()

_ARCHITECTURES = ("BartForConditionalGeneration", "BartModel")
_POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's fixed offset
_NORM_EPS = 1e-5  # transformers' BART uses nn.LayerNorm's default


def config_from_hf(hf_config: dict):
  architectures = hf_config.get("architectures") or [_ARCHITECTURES[0]]
  if architectures[0] not in _ARCHITECTURES:
    raise ConversionError(
      f"config.json architectures={architectures} is not supported; "
      f"supported: {list(_ARCHITECTURES)}"
    )
  for encoder_field, decoder_field in (
    ("encoder_attention_heads", "decoder_attention_heads"),
    ("encoder_ffn_dim", "decoder_ffn_dim"),
  ):
    if hf_config[encoder_field] != hf_config[decoder_field]:
      raise ConversionError(
        f"config.json {encoder_field}={hf_config[encoder_field]} differs from "
        f"{decoder_field}={hf_config[decoder_field]}: the model uses one value for both"
      )
  d_model, num_heads = hf_config["d_model"], hf_config["encoder_attention_heads"]
  if d_model % num_heads:
    raise ConversionError(
      f"config.json d_model={d_model} is not divisible by encoder_attention_heads={num_heads}"
    )
  bare = architectures[0] == "BartModel"
  cfg = models.default_model_config()
  cfg.update(
    dict(
      family="encoder_decoder",
      hf_model_type="bart",
      vocab_size=hf_config["vocab_size"],
      d_model=d_model,
      num_layers=hf_config["encoder_layers"],
      num_decoder_layers=hf_config["decoder_layers"],
      num_heads=num_heads,
      d_ff=hf_config["encoder_ffn_dim"],
      activation=common.activation_from_hf(hf_config, "activation_function"),
      norm="layernorm",
      norm_eps=_NORM_EPS,
      norm_position="post",
      use_bias=True,
      position="learned",
      max_len=hf_config["max_position_embeddings"],
      position_offset=_POSITION_OFFSET,
      scale_attention=True,
      scale_embeddings=bool(hf_config.get("scale_embedding", False)),
      embedding_norm=True,
      final_norm=False,
      tie_embeddings=bare or hf_config.get("tie_word_embeddings", True),
      final_logits_bias=True,
      logits_scale_by_dmodel=False,
      pad_token_id=hf_config.get("pad_token_id", 1),
      decoder_start_token_id=hf_config.get("decoder_start_token_id", 2),
      dropout_rate=hf_config.get("dropout", 0.1),
      attention_dropout_rate=hf_config.get("attention_dropout", 0.0),
      init_std=hf_config.get("init_std", 0.02),
    )
  )
  return cfg


def _attention_rows(ours: tuple, hf: str) -> list:
  rows = []
  for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    rows += [
      (ours + (name, "kernel"), f"{hf}.{proj}.weight", "heads"),
      (ours + (name, "bias"), f"{hf}.{proj}.bias", "flat"),
    ]
  return rows + [
    (ours + ("out", "kernel"), f"{hf}.out_proj.weight", "out"),
    (ours + ("out", "bias"), f"{hf}.out_proj.bias", "same"),
  ]


def _norm_rows(ours: tuple, hf: str) -> list:
  return [(ours + ("scale",), f"{hf}.weight", "same"), (ours + ("bias",), f"{hf}.bias", "same")]


def _table(cfg, prefix: str) -> list:
  """(param path, Hugging Face tensor name, torch layout) rows of the encoder and decoder."""
  rows = [(("token_embed", "embedding"), f"{prefix}shared.weight", "same")]
  num_layers = {"encoder": cfg.num_layers, "decoder": cfg.num_decoder_layers or cfg.num_layers}
  for stack, n in num_layers.items():
    hf_stack = f"{prefix}{stack}"
    rows.append(
      ((stack, "position_embed", "embedding"), f"{hf_stack}.embed_positions.weight", "same")
    )
    rows += _norm_rows((stack, "embedding_norm"), f"{hf_stack}.layernorm_embedding")
    for i in range(n):
      ours, hf = (stack, f"layers_{i}"), f"{hf_stack}.layers.{i}"
      rows += _attention_rows(ours + ("self_attention",), f"{hf}.self_attn")
      rows += _norm_rows(ours + ("self_attention_norm",), f"{hf}.self_attn_layer_norm")
      if stack == "decoder":
        rows += _attention_rows(ours + ("cross_attention",), f"{hf}.encoder_attn")
        rows += _norm_rows(ours + ("cross_attention_norm",), f"{hf}.encoder_attn_layer_norm")
      rows += [
        (ours + ("mlp", "wi", "kernel"), f"{hf}.fc1.weight", "linear"),
        (ours + ("mlp", "wi", "bias"), f"{hf}.fc1.bias", "same"),
        (ours + ("mlp", "wo", "kernel"), f"{hf}.fc2.weight", "linear"),
        (ours + ("mlp", "wo", "bias"), f"{hf}.fc2.bias", "same"),
      ]
      rows += _norm_rows(ours + ("mlp_norm",), f"{hf}.final_layer_norm")
  if not cfg.tie_embeddings:
    rows.append((("head", "lm_head", "kernel"), "lm_head.weight", "linear"))
  return rows


def params_from_hf(hf_config: dict, reader: common.TensorReader, cfg) -> dict:
  prefix = "" if reader.has("shared.weight") else "model."  # a bare BartModel has no prefix
  params = common.params_from_table(cfg, _table(cfg, prefix), reader)
  shared_VxD = params["token_embed"]["embedding"]
  # Per-stack copies of `shared` (older checkpoints, or untied ones): transformers ties them to
  # `shared` unless tie_word_embeddings=False, when they must equal it to share one embedding.
  copies = [f"{prefix}encoder.embed_tokens.weight", f"{prefix}decoder.embed_tokens.weight"]
  for name in copies + (["lm_head.weight"] if cfg.tie_embeddings else []):
    if reader.has(name):
      copy = reader.take(name, shared_VxD.shape)
      if not cfg.tie_embeddings and not np.array_equal(copy, shared_VxD):
        raise ConversionError(
          f"tensor {name!r} differs from {prefix}shared.weight: the "
          f"model shares one token embedding between the stacks"
        )
  vocab = (cfg.vocab_size,)
  params["head"] = params.get("head", {})
  params["head"]["final_logits_bias"] = (
    common.from_torch("row", reader.take("final_logits_bias", (1, *vocab)), vocab)
    if reader.has("final_logits_bias")
    else np.zeros(vocab, np.float32)
  )
  return params


def config_to_hf(cfg) -> dict:
  _check_exportable(cfg)
  return {
    "architectures": ["BartForConditionalGeneration"],
    "model_type": "bart",
    "vocab_size": cfg.vocab_size,
    "d_model": cfg.d_model,
    "encoder_layers": cfg.num_layers,
    "decoder_layers": cfg.num_decoder_layers or cfg.num_layers,
    "encoder_attention_heads": cfg.num_heads,
    "decoder_attention_heads": cfg.num_heads,
    "encoder_ffn_dim": cfg.d_ff,
    "decoder_ffn_dim": cfg.d_ff,
    "activation_function": common.activation_to_hf(cfg),
    "max_position_embeddings": cfg.max_len,
    "scale_embedding": bool(cfg.scale_embeddings),
    "tie_word_embeddings": bool(cfg.tie_embeddings),
    "dropout": cfg.dropout_rate,
    "attention_dropout": cfg.attention_dropout_rate,
    "activation_dropout": 0.0,
    "init_std": cfg.init_std,
    "pad_token_id": cfg.pad_token_id,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "forced_eos_token_id": 2,
    "decoder_start_token_id": cfg.decoder_start_token_id,
    "is_encoder_decoder": True,
  }


def params_to_hf(cfg, params) -> dict[str, np.ndarray]:
  _check_exportable(cfg)
  tensors = common.params_to_torch(_table(cfg, "model."), common.unstack_layers(params))
  if not cfg.tie_embeddings:  # untied, transformers keeps a separate embedding per stack
    for stack in ("encoder", "decoder"):
      tensors[f"model.{stack}.embed_tokens.weight"] = tensors["model.shared.weight"]
  bias_V = (
    params["head"]["final_logits_bias"]
    if cfg.final_logits_bias
    else np.zeros((cfg.vocab_size,), np.float32)
  )
  tensors["final_logits_bias"] = common.to_torch("row", np.asarray(bias_V))
  return tensors


def _check_exportable(cfg) -> None:
  common.activation_to_hf(cfg)
  head_dim = (None, cfg.d_model // cfg.num_heads) if cfg.d_model % cfg.num_heads == 0 else None
  common.require(
    cfg,
    "BART",
    family="encoder_decoder",
    norm="layernorm",
    norm_eps=_NORM_EPS,
    norm_position="post",
    position="learned",
    position_offset=_POSITION_OFFSET,
    use_bias=True,
    scale_attention=True,
    embedding_norm=True,
    final_norm=False,
    logits_scale_by_dmodel=False,
    num_kv_heads=(None, cfg.num_heads),
    head_dim=head_dim,
  )
