"""Checks a model config before building, naming the offending field."""

import jax

from llm_jax.models import attention
from llm_jax.models import attention_ops
from llm_jax.models import layers
from llm_jax.models import moe
from llm_jax.models import transformer

_CHOICES = {
    "family": ("encoder", "decoder", "encoder_decoder"),
    "norm": ("layernorm", "rmsnorm"),
    "norm_position": ("pre", "post", "deepnorm"),
    "position": ("learned", "sinusoidal", "rope", "alibi", "t5_relative", "none"),
    "rope_scaling": ("none", "linear", "ntk"),
    "attention": ("causal", "prefix"),
    "remat_policy": ("none", *transformer.REMAT_POLICIES),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16", "float16"),
    "activation": (*layers.ACTIVATIONS, *layers.GATED_ACTIVATIONS),
    "attention_impl": attention_ops.IMPLS,
    "attention_kind": attention_ops.KINDS,
}


def validate_model_config(cfg) -> None:
  moe.validate_moe_config(cfg)
  for field, choices in _CHOICES.items():
    if cfg[field] not in choices:
      raise ValueError(f"model.{field}={cfg[field]!r} is not one of {choices}")
  for field in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_len"):
    if cfg[field] <= 0:
      raise ValueError(f"model.{field} must be positive; got {cfg[field]}")
  num_kv_heads = cfg.num_kv_heads or cfg.num_heads
  if cfg.num_heads % num_kv_heads:
    raise ValueError(f"model.num_heads={cfg.num_heads} is not a multiple of "
                     f"model.num_kv_heads={num_kv_heads}")
  head_dim = cfg.head_dim or cfg.d_model // cfg.num_heads
  if cfg.head_dim is None and cfg.d_model % cfg.num_heads:
    raise ValueError(f"model.d_model={cfg.d_model} is not divisible by "
                     f"model.num_heads={cfg.num_heads}; set model.head_dim")
  if cfg.position == "rope" and head_dim % 2:
    raise ValueError(f"model.position='rope' needs an even head_dim; got {head_dim}")
  if cfg.position == "sinusoidal" and cfg.d_model % 2:
    raise ValueError(f"model.position='sinusoidal' needs an even d_model; got {cfg.d_model}")
  if cfg.rope_scaling != "none" and cfg.rope_scaling_factor <= 0:
    raise ValueError(f"model.rope_scaling_factor must be positive; got {cfg.rope_scaling_factor}")
  if cfg.nsp_head and not cfg.pooler:
    raise ValueError("model.nsp_head=True needs model.pooler=True")
  if cfg.family != "decoder" and cfg.attention != "causal":
    raise ValueError(f"model.attention={cfg.attention!r} applies to decoder-only models; "
                     f"family={cfg.family!r}")
  validate_attention_config(cfg)


def validate_attention_config(cfg) -> None:
  """The attention fields: kinds, windows and whether the requested impl can run here."""
  if cfg.sliding_window < 0:
    raise ValueError(f"model.sliding_window must be >= 0 (0 = off); got {cfg.sliding_window}")
  if cfg.sliding_window:
    if cfg.attention_kind != "full":
      raise ValueError(f"model.sliding_window={cfg.sliding_window} applies to "
                       f"model.attention_kind='full', not {cfg.attention_kind!r}")
    num_layers = [cfg.num_layers]
    if cfg.family == "encoder_decoder":
      num_layers.append(cfg.num_decoder_layers or cfg.num_layers)
    for n in num_layers:
      selected = attention.parse_window_layers(cfg.sliding_window_layers, n)
      if cfg.scan_layers and len(selected) != n:
        raise ValueError(f"model.sliding_window_layers={cfg.sliding_window_layers!r} selects "
                         f"some layers only, which needs model.scan_layers=False")
  if cfg.attention_kind == "block_sparse":
    if cfg.block_sparse_block_size <= 0:
      raise ValueError("model.block_sparse_block_size must be positive for "
                       f"model.attention_kind='block_sparse'; got {cfg.block_sparse_block_size}")
    if cfg.block_sparse_global_tokens < 0:
      raise ValueError("model.block_sparse_global_tokens must be >= 0; got "
                       f"{cfg.block_sparse_global_tokens}")
  if cfg.attention_kind == "linear":
    if cfg.linear_attention_chunk <= 0:
      raise ValueError(f"model.linear_attention_chunk must be positive; got "
                       f"{cfg.linear_attention_chunk}")
    blockers = {"model.attention='prefix'": cfg.family == "decoder" and cfg.attention == "prefix",
                f"model.position={cfg.position!r}": cfg.position in ("alibi", "t5_relative"),
                "model.peft.prefix_length > 0": cfg.peft.prefix_length > 0,
                "model.peft.prompt_length > 0": cfg.peft.prompt_length > 0}
    for what, blocks in blockers.items():
      if blocks:
        raise ValueError(f"model.attention_kind='linear' does not support {what}")
  if cfg.attention_kind == "block_sparse" and cfg.peft.prompt_length:
    raise ValueError("model.attention_kind='block_sparse' does not support "
                     "model.peft.prompt_length > 0")
  if cfg.attention_impl == "splash":
    platform = jax.default_backend()
    if platform != "tpu" and not cfg.attention_interpret:
      raise ValueError(f"model.attention_impl='splash' needs a TPU (platform is {platform!r}); "
                       "set model.attention_interpret=True to run it in Pallas interpret mode")
    if not attention_ops.splash_available():
      raise ValueError("model.attention_impl='splash': jax.experimental.pallas.ops.tpu."
                       "splash_attention cannot be imported in this jax version")
