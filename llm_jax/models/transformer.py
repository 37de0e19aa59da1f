"""Transformer layers and stacks shared by the three families.

A Stack turns token embeddings into hidden states: position embeddings / token types /
embedding norm, then `num_layers` layers (a Python loop or nn.scan, optionally rematerialised),
then the final norm. Relative position biases (ALiBi, T5) are computed inside attention from
query and key positions; the T5 bias table lives once per stack and is shared by its layers.

Prefix tuning (Stack.prefix_length > 0): each layer's self-attention gets learned prefix keys
and values: per-layer PrefixTables, or with cfg.peft.prefix_hidden > 0 one PrefixEncoder MLP per
stack ('prefix_encoder') whose output is sliced per layer (scanned over the 'layers' axis with
scan_layers). The positions passed to the stack are final: the model has already shifted the
real tokens past the prefix and the soft prompt (see models/prompts.py).
Houlsby adapters (cfg.peft.adapter_size > 0) follow the self-attention and MLP sublayers.
"""

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import attention
from llm_jax.models import layers
from llm_jax.models import moe
from llm_jax.models import positions
from llm_jax.models import prompts

Array = jax.Array

REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def deepnorm_coefficients(cfg, stack: str) -> tuple[float, float]:
  """(alpha, beta) of DeepNet for 'encoder' or 'decoder' stack; (1, 1) unless deepnorm."""
  if cfg.norm_position != "deepnorm":
    return 1.0, 1.0
  n = cfg.num_layers
  if cfg.family == "encoder_decoder":
    m = cfg.num_decoder_layers or cfg.num_layers
    if stack == "encoder":
      alpha, beta = 0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16)
    else:
      alpha, beta = (3 * m) ** 0.25, (12 * m) ** -0.25
  else:
    alpha, beta = (2 * n) ** 0.25, (8 * n) ** -0.25
  return alpha, (beta if cfg.deepnorm_init_beta else 1.0)


class TransformerLayer(nn.Module):
  """Self-attention, optional cross-attention, MLP; residuals per cfg.norm_position.

  pre:      x = x + f(norm(x))
  post:     x = norm(x + f(x))
  deepnorm: x = norm(alpha * x + f(x))

  With cfg.peft.adapter_size > 0, f(.) is followed by a Houlsby adapter (after its dropout) for
  the self-attention ('self_attention_adapter') and the MLP ('mlp_adapter').
  """
  cfg: object
  mask_type: str = "causal"
  relative: str = "none"
  has_cross: bool = False
  alpha: float = 1.0
  beta: float = 1.0
  scanned: bool = False  # return (x, None) as nn.scan expects
  prefix_length: int = 0  # prefix tuning in the self-attention
  shared_positions: int = 0  # see attention.Attention
  sliding_window: int = 0  # this layer's self-attention window (attention.layer_window)
  use_moe: bool = False  # the MLP is a Mixture-of-Experts block (cfg.moe)

  @nn.compact
  def __call__(self, x_BxLxD: Array, positions_BxL: Array, segment_ids_BxL: Array,
               prefix_BxL: Optional[Array], encoded_BxSxD: Optional[Array],
               encoder_segment_ids_BxS: Optional[Array], relpos_table_NxH: Optional[Array],
               deterministic: bool = True, decode: bool = False,
               prefix_kv_2xPxGxK: Optional[Array] = None):
    cfg = self.cfg
    if cfg.norm_position not in ("pre", "post", "deepnorm"):
      raise ValueError(f"Unknown norm_position {cfg.norm_position!r}")
    dropout = nn.Dropout(cfg.dropout_rate)

    def residual(x, fn, name, adapter=False):
      norm = layers.make_norm(cfg, f"{name}_norm")
      post = cfg.norm_position != "pre"
      y = dropout(fn(x if post else norm(x)), deterministic=deterministic)
      if adapter and cfg.peft.adapter_size:
        y = prompts.Adapter(cfg, name=f"{name}_adapter")(y)
      if not post:
        return x + y
      return norm(x * jnp.asarray(self.alpha, x.dtype) + y)

    self_attention = attention.Attention(
        cfg, mask_type=self.mask_type, relative=self.relative,
        use_rope=cfg.position == "rope", init_scale=self.beta, prefix_length=self.prefix_length,
        shared_positions=self.shared_positions, sliding_window=self.sliding_window,
        name="self_attention")
    x_BxLxD = residual(
        x_BxLxD, lambda h: self_attention(h, positions_BxL, segment_ids_BxL, prefix_BxL, None,
                                          None, relpos_table_NxH, deterministic, decode,
                                          prefix_kv_2xPxGxK),
        "self_attention", adapter=True)
    if self.has_cross:
      cross_attention = attention.Attention(cfg, mask_type="cross", init_scale=self.beta,
                                            name="cross_attention")
      x_BxLxD = residual(
          x_BxLxD, lambda h: cross_attention(h, positions_BxL, segment_ids_BxL, None,
                                             encoded_BxSxD, encoder_segment_ids_BxS, None,
                                             deterministic, decode),
          "cross_attention")
    if self.use_moe:
      moe_block = moe.MoE(cfg, init_scale=self.beta, name="moe")
      mlp = lambda h: moe_block(h, segment_ids_BxL, deterministic)
    else:
      mlp = functools.partial(layers.MLP(cfg, init_scale=self.beta, name="mlp"),
                              deterministic=deterministic)
    x_BxLxD = residual(x_BxLxD, mlp, "mlp", adapter=True)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))
    return (x_BxLxD, None) if self.scanned else x_BxLxD


class Stack(nn.Module):
  """Embedding extras -> num_layers TransformerLayers -> final norm."""
  cfg: object
  num_layers: int
  mask_type: str = "causal"
  has_cross: bool = False
  use_token_types: bool = False
  deepnorm_stack: str = "decoder"  # which DeepNet coefficients apply
  prefix_length: int = 0  # prefix tuning in every self-attention layer of this stack
  shared_positions: int = 0  # a decoder's soft prompt: see attention.Attention

  @nn.compact
  def __call__(self, x_BxLxD: Array, positions_BxL: Array, segment_ids_BxL: Array,
               prefix_BxL: Optional[Array] = None, encoded_BxSxD: Optional[Array] = None,
               encoder_segment_ids_BxS: Optional[Array] = None,
               token_type_ids_BxL: Optional[Array] = None, deterministic: bool = True,
               decode: bool = False) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = layers.kernel_init(cfg.init_std)
    num_heads = cfg.num_heads

    x_BxLxD = x_BxLxD.astype(dtype)
    if cfg.scale_embeddings:
      x_BxLxD = x_BxLxD * jnp.asarray(math.sqrt(cfg.d_model), dtype)
    if cfg.position == "learned":
      x_BxLxD += layers.embed(cfg.max_len + cfg.position_offset, cfg.d_model, (None, "embed"),
                              dtype=dtype, param_dtype=param_dtype, init=init,
                              name="position_embed")(positions_BxL + cfg.position_offset)
    elif cfg.position == "sinusoidal":
      x_BxLxD += positions.sinusoidal(positions_BxL, cfg.d_model).astype(dtype)
    if self.use_token_types and cfg.type_vocab_size:
      if token_type_ids_BxL is None:
        token_type_ids_BxL = jnp.zeros_like(positions_BxL)
      x_BxLxD += layers.embed(cfg.type_vocab_size, cfg.d_model, (None, "embed"), dtype=dtype,
                              param_dtype=param_dtype, init=init,
                              name="token_type_embed")(token_type_ids_BxL)
    if cfg.embedding_norm:
      x_BxLxD = layers.make_norm(cfg, "embedding_norm")(x_BxLxD)
    x_BxLxD = nn.Dropout(cfg.dropout_rate)(x_BxLxD, deterministic=deterministic)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))

    relative, relpos_table_NxH = "none", None
    if cfg.position == "alibi":
      relative = "alibi"
    elif cfg.position == "t5_relative":
      relative = "t5_bidirectional" if self.mask_type == "bidirectional" else "t5"
      relpos_table_NxH = self.param(
          "relpos_bias", nn.with_logical_partitioning(init, ("relpos_buckets", "heads")),
          (cfg.relative_num_buckets, num_heads), param_dtype)

    alpha, beta = deepnorm_coefficients(cfg, self.deepnorm_stack)
    layer_cls = TransformerLayer
    if cfg.remat_policy != "none":
      if cfg.remat_policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat_policy {cfg.remat_policy!r}; known: "
                         f"{['none', *REMAT_POLICIES]}")
      # self=0, x=1, ..., deterministic=8, decode=9.
      layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[cfg.remat_policy],
                           prevent_cse=not cfg.scan_layers, static_argnums=(8, 9))
    layer_kwargs = dict(cfg=cfg, mask_type=self.mask_type, relative=relative,
                        has_cross=self.has_cross, alpha=alpha, beta=beta,
                        prefix_length=self.prefix_length, shared_positions=self.shared_positions)
    args = (positions_BxL, segment_ids_BxL, prefix_BxL, encoded_BxSxD, encoder_segment_ids_BxS,
            relpos_table_NxH, deterministic, decode)
    prefix_kv_Nx2xPxGxK = None  # every layer's prefix from the reparameterisation MLP
    if self.prefix_length and cfg.peft.prefix_hidden:
      prefix_kv_Nx2xPxGxK = prompts.PrefixEncoder(
          cfg, self.num_layers, self.prefix_length, cfg.peft.prefix_hidden,
          name="prefix_encoder")()
    if cfg.scan_layers:
      scanned = nn.scan(
          layer_cls, variable_axes={"params": 0, "cache": 0, moe.AUX_COLLECTION: 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * len(args) + (
              nn.broadcast if prefix_kv_Nx2xPxGxK is None else 0,),
          length=self.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      window = attention.layer_window(cfg, 0, self.num_layers)  # validate: same in every layer
      x_BxLxD, _ = scanned(**layer_kwargs, scanned=True, sliding_window=window,
                           use_moe=moe.is_moe_layer(cfg, 0), name="layers")(
          x_BxLxD, *args, prefix_kv_Nx2xPxGxK)
    else:
      for i in range(self.num_layers):
        layer_kv = None if prefix_kv_Nx2xPxGxK is None else prefix_kv_Nx2xPxGxK[i]
        window = attention.layer_window(cfg, i, self.num_layers)
        x_BxLxD = layer_cls(**layer_kwargs, sliding_window=window,
                            use_moe=moe.is_moe_layer(cfg, i), name=f"layers_{i}")(
            x_BxLxD, *args, layer_kv)

    if cfg.final_norm:
      x_BxLxD = layers.make_norm(cfg, "final_norm")(x_BxLxD)
    return nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))


def default_positions(positions_BxL: Optional[Array], inputs_BxL: Array, decode: bool,
                      initializing: bool, field: str) -> Array:
  """arange(L) per row when not given; decoding steps must pass explicit positions."""
  if positions_BxL is not None:
    return positions_BxL.astype(jnp.int32)
  if decode and not initializing:
    raise ValueError(f"decode=True needs explicit {field} (the absolute position of each new token)")
  return jnp.broadcast_to(jnp.arange(inputs_BxL.shape[1], dtype=jnp.int32), inputs_BxL.shape)


def default_segment_ids(segment_ids_BxL: Optional[Array], inputs_BxL: Array) -> Array:
  if segment_ids_BxL is None:
    return jnp.ones(inputs_BxL.shape, jnp.int32)
  return segment_ids_BxL.astype(jnp.int32)


def check_inputs(name: str, inputs, expected_ndim: int = 2):
  if inputs.ndim != expected_ndim:
    raise ValueError(f"{name} must have shape [batch, length]; got shape {inputs.shape}")
