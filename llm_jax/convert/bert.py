"""BERT and RoBERTa <-> the encoder-only model (post-LN, learned positions, MLM head).

The Hugging Face architecture sets the heads: BertModel / RobertaModel (pooler),
*ForMaskedLM (MLM head), BertForPreTraining (MLM + pooler + next-sentence head),
BertForNextSentencePrediction, *ForSequenceClassification (pooler + classifier; RoBERTa's
classification head is dense + tanh + out_proj, the same structure as pooler + classifier).
RoBERTa numbers positions from padding_idx + 1: the model's position_offset.
"""

import numpy as np

from llm_jax import models
from llm_jax.convert import common
from llm_jax.convert.common import ConversionError

HF_MODEL_TYPES = ("bert", "roberta")
# Buffers, and MLM decoder tensors that transformers overwrites with the tied ones.
IGNORED_TENSORS = (
  r"position_ids$",
  r"^(cls\.predictions|lm_head)\.(decoder\.weight|decoder\.bias)$",
)

# architecture -> (mlm_head, pooler, nsp_head, classifier)
_ARCHITECTURES = {
  "bert": {
    "BertModel": (False, True, False, False),
    "BertForMaskedLM": (True, False, False, False),
    "BertForPreTraining": (True, True, True, False),
    "BertForNextSentencePrediction": (False, True, True, False),
    "BertForSequenceClassification": (False, True, False, True),
  },
  "roberta": {
    "RobertaModel": (False, True, False, False),
    "RobertaForMaskedLM": (True, False, False, False),
    "RobertaForSequenceClassification": (False, True, False, True),
  },
}


def _model_type(cfg) -> str:
  """'bert' or 'roberta'; a model config without hf_model_type exports as BERT."""
  model_type = cfg.get("hf_model_type") or "bert"
  if model_type not in HF_MODEL_TYPES:
    raise ConversionError(f"model.hf_model_type={model_type!r} is not one of {HF_MODEL_TYPES}")
  return model_type


def _heads(cfg) -> tuple[bool, bool, bool, bool]:
  return bool(cfg.mlm_head), bool(cfg.pooler), bool(cfg.nsp_head), cfg.num_labels > 0


def _architecture(cfg) -> str:
  for name, heads in _ARCHITECTURES[_model_type(cfg)].items():
    if heads == _heads(cfg):
      return name
  raise ConversionError(
    f"no Hugging Face {_model_type(cfg)} architecture has the heads (mlm_head, pooler, "
    f"nsp_head, num_labels>0)={_heads(cfg)}; supported: {_ARCHITECTURES[_model_type(cfg)]}"
  )


def _position_offset(hf_config: dict) -> int:
  if hf_config["model_type"] != "roberta":
    return 0
  if not isinstance(hf_config.get("pad_token_id"), int):
    raise ConversionError(
      f"config.json pad_token_id={hf_config.get('pad_token_id')!r}: "
      f"RoBERTa numbers positions from pad_token_id + 1 and needs it"
    )
  return hf_config["pad_token_id"] + 1


def config_from_hf(hf_config: dict):
  model_type = hf_config["model_type"]
  for field in ("is_decoder", "add_cross_attention"):
    if hf_config.get(field):
      raise ConversionError(
        f"config.json {field}=True is not supported: only the "
        f"bidirectional {model_type} encoder converts"
      )
  if hf_config.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(
      f"config.json position_embedding_type="
      f"{hf_config['position_embedding_type']!r} is not supported; "
      f"only 'absolute'"
    )
  architectures = hf_config.get("architectures") or [next(iter(_ARCHITECTURES[model_type]))]
  if architectures[0] not in _ARCHITECTURES[model_type]:
    raise ConversionError(
      f"config.json architectures={architectures} is not supported; "
      f"supported: {sorted(_ARCHITECTURES[model_type])}"
    )
  mlm_head, pooler, nsp_head, classifier = _ARCHITECTURES[model_type][architectures[0]]
  activation = common.activation_from_hf(hf_config, "hidden_act")
  if model_type == "roberta" and mlm_head and activation != "gelu":
    raise ConversionError(
      f"config.json hidden_act={hf_config['hidden_act']!r}: RoBERTa's MLM "
      f"head always uses 'gelu', the model's uses hidden_act"
    )
  d_model, num_heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
  if d_model % num_heads:
    raise ConversionError(
      f"config.json hidden_size={d_model} is not divisible by num_attention_heads={num_heads}"
    )
  offset = _position_offset(hf_config)
  num_labels = len(hf_config.get("id2label") or {}) or hf_config.get("num_labels", 2)
  cfg = models.default_model_config()
  cfg.update(
    dict(
      family="encoder",
      hf_model_type=model_type,
      vocab_size=hf_config["vocab_size"],
      d_model=d_model,
      num_layers=hf_config["num_hidden_layers"],
      num_heads=num_heads,
      d_ff=hf_config["intermediate_size"],
      activation=activation,
      norm="layernorm",
      norm_eps=hf_config.get("layer_norm_eps", 1e-12),
      norm_position="post",
      use_bias=True,
      position="learned",
      max_len=hf_config["max_position_embeddings"] - offset,
      position_offset=offset,
      scale_attention=True,
      scale_embeddings=False,
      embedding_norm=True,
      final_norm=False,
      type_vocab_size=hf_config.get("type_vocab_size", 2),
      tie_embeddings=hf_config.get("tie_word_embeddings", True),
      mlm_head=mlm_head,
      mlm_head_transform=True,
      pooler=pooler,
      nsp_head=nsp_head,
      num_labels=num_labels if classifier else 0,
      final_logits_bias=False,
      logits_scale_by_dmodel=False,
      pad_token_id=hf_config.get("pad_token_id") or 0,
      dropout_rate=hf_config.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf_config.get("attention_probs_dropout_prob", 0.1),
      init_std=hf_config.get("initializer_range", 0.02),
    )
  )
  return cfg


def _table(cfg, prefix: str):
  """(param path, Hugging Face tensor name, torch layout) rows of every converted tensor."""
  p = prefix
  rows = [
    (("token_embed", "embedding"), f"{p}embeddings.word_embeddings.weight", "same"),
    (
      ("encoder", "position_embed", "embedding"),
      f"{p}embeddings.position_embeddings.weight",
      "same",
    ),
    (("encoder", "embedding_norm", "scale"), f"{p}embeddings.LayerNorm.weight", "same"),
    (("encoder", "embedding_norm", "bias"), f"{p}embeddings.LayerNorm.bias", "same"),
  ]
  if cfg.type_vocab_size:
    rows.append(
      (
        ("encoder", "token_type_embed", "embedding"),
        f"{p}embeddings.token_type_embeddings.weight",
        "same",
      )
    )
  for i in range(cfg.num_layers):
    ours, hf = ("encoder", f"layers_{i}"), f"{p}encoder.layer.{i}."
    attn, attn_out = ours + ("self_attention",), f"{hf}attention.output"
    for name in ("query", "key", "value"):
      rows += [
        (attn + (name, "kernel"), f"{hf}attention.self.{name}.weight", "heads"),
        (attn + (name, "bias"), f"{hf}attention.self.{name}.bias", "flat"),
      ]
    rows += [
      (attn + ("out", "kernel"), f"{attn_out}.dense.weight", "out"),
      (attn + ("out", "bias"), f"{attn_out}.dense.bias", "same"),
      (ours + ("self_attention_norm", "scale"), f"{attn_out}.LayerNorm.weight", "same"),
      (ours + ("self_attention_norm", "bias"), f"{attn_out}.LayerNorm.bias", "same"),
      (ours + ("mlp", "wi", "kernel"), f"{hf}intermediate.dense.weight", "linear"),
      (ours + ("mlp", "wi", "bias"), f"{hf}intermediate.dense.bias", "same"),
      (ours + ("mlp", "wo", "kernel"), f"{hf}output.dense.weight", "linear"),
      (ours + ("mlp", "wo", "bias"), f"{hf}output.dense.bias", "same"),
      (ours + ("mlp_norm", "scale"), f"{hf}output.LayerNorm.weight", "same"),
      (ours + ("mlp_norm", "bias"), f"{hf}output.LayerNorm.bias", "same"),
    ]
  roberta = _model_type(cfg) == "roberta"
  if cfg.mlm_head:
    if roberta:
      head, dense, norm = "lm_head.", "lm_head.dense", "lm_head.layer_norm"
    else:
      head, dense, norm = (
        "cls.predictions.",
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
      )
    rows += [
      (("mlm_head", "transform", "kernel"), f"{dense}.weight", "linear"),
      (("mlm_head", "transform", "bias"), f"{dense}.bias", "same"),
      (("mlm_head", "transform_norm", "scale"), f"{norm}.weight", "same"),
      (("mlm_head", "transform_norm", "bias"), f"{norm}.bias", "same"),
    ]
    if cfg.tie_embeddings:
      rows.append((("mlm_head", "bias"), f"{head}bias", "same"))
    else:  # The untied decoder's own bias is the one its forward pass adds.
      rows += [
        (("mlm_head", "decoder", "kernel"), f"{head}decoder.weight", "linear"),
        (("mlm_head", "bias"), f"{head}decoder.bias", "same"),
      ]
  classifier = roberta and cfg.num_labels > 0
  if cfg.pooler:
    pooler = "classifier.dense" if classifier else f"{p}pooler.dense"
    rows += [
      (("pooler", "kernel"), f"{pooler}.weight", "linear"),
      (("pooler", "bias"), f"{pooler}.bias", "same"),
    ]
  if cfg.nsp_head:
    rows += [
      (("nsp_head", "kernel"), "cls.seq_relationship.weight", "linear"),
      (("nsp_head", "bias"), "cls.seq_relationship.bias", "same"),
    ]
  if cfg.num_labels:
    out = "classifier.out_proj" if classifier else "classifier"
    rows += [
      (("classifier", "kernel"), f"{out}.weight", "linear"),
      (("classifier", "bias"), f"{out}.bias", "same"),
    ]
  return rows


def params_from_hf(hf_config: dict, reader: common.TensorReader, cfg) -> dict:
  prefix = f"{_model_type(cfg)}."
  if not reader.has(f"{prefix}embeddings.word_embeddings.weight"):
    prefix = ""  # a bare BertModel / RobertaModel
  params = common.params_from_table(cfg, _table(cfg, prefix), reader)
  unused_bias = f"{'lm_head' if _model_type(cfg) == 'roberta' else 'cls.predictions'}.bias"
  if cfg.mlm_head and not cfg.tie_embeddings and reader.has(unused_bias):
    reader.take(unused_bias)  # Untied, the decoder's own bias is the one applied.
  return params


def config_to_hf(cfg) -> dict:
  _check_exportable(cfg)
  model_type = _model_type(cfg)
  offset = cfg.position_offset
  hf_config = {
    "architectures": [_architecture(cfg)],
    "model_type": model_type,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "intermediate_size": cfg.d_ff,
    "hidden_act": common.activation_to_hf(cfg),
    "hidden_dropout_prob": cfg.dropout_rate,
    "attention_probs_dropout_prob": cfg.attention_dropout_rate,
    "max_position_embeddings": cfg.max_len + offset,
    "type_vocab_size": max(cfg.type_vocab_size, 1),
    "initializer_range": cfg.init_std,
    "layer_norm_eps": cfg.norm_eps,
    "pad_token_id": cfg.pad_token_id,
    "tie_word_embeddings": bool(cfg.tie_embeddings),
    "is_decoder": False,
    "add_cross_attention": False,
  }
  if cfg.num_labels:
    hf_config["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
    hf_config["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
  if model_type == "roberta":
    hf_config.update(bos_token_id=0, eos_token_id=2)
  return hf_config


def params_to_hf(cfg, params) -> dict[str, np.ndarray]:
  _check_exportable(cfg)
  architecture = _architecture(cfg)
  prefix = "" if architecture.endswith("Model") else f"{_model_type(cfg)}."
  tensors = common.params_to_torch(_table(cfg, prefix), common.unstack_layers(params))
  if not cfg.type_vocab_size:  # transformers always adds token-type embeddings: zeros add nothing
    tensors[f"{prefix}embeddings.token_type_embeddings.weight"] = np.zeros(
      (1, cfg.d_model), np.float32
    )
  if cfg.mlm_head and not cfg.tie_embeddings:
    head = "lm_head" if _model_type(cfg) == "roberta" else "cls.predictions"
    tensors[f"{head}.bias"] = tensors[f"{head}.decoder.bias"]
  return tensors


def _check_exportable(cfg) -> None:
  name = _model_type(cfg)
  common.activation_to_hf(cfg)
  offset = cfg.pad_token_id + 1 if name == "roberta" else 0
  common.require(
    cfg,
    name,
    family="encoder",
    norm="layernorm",
    norm_position="post",
    position="learned",
    position_offset=offset,
    use_bias=True,
    scale_attention=True,
    scale_embeddings=False,
    embedding_norm=True,
    final_norm=False,
    logits_scale_by_dmodel=False,
    final_logits_bias=False,
    num_kv_heads=(None, cfg.num_heads),
    head_dim=(None, cfg.d_model // cfg.num_heads) if cfg.d_model % cfg.num_heads == 0 else None,
  )
  if cfg.mlm_head:
    common.require(cfg, name, mlm_head_transform=True)
    if name == "roberta":
      common.require(cfg, "a RoBERTa MLM head", activation="gelu")
