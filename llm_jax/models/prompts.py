"""Prompt learning and bottleneck adapters: prefix key/value tables, the prefix
reparameterisation MLP, the soft prompt and Houlsby adapters (cfg.peft).

Positions (as Hugging Face / peft): the learned prefix occupies positions [0, prefix_length) and
the soft prompt [prefix_length, prefix_length + prompt_length); the real tokens' positions are
the given (or default arange) positions plus prefix_length + prompt_length. HF models given
past_key_values of length P number the new tokens from P, and peft offsets explicit position_ids
by P for prefix tuning; a soft prompt is part of HF's inputs_embeds, so it takes positions 0..P-1.
Prefix keys carry no RoPE rotation (HF's past_key_values hold keys as they are attended).

Parameters (cfg.peft):
  {stack}/layers_{i}/self_attention/prefix/{key,value}        [prefix_length, kv_heads, head_dim]
      (prefix_hidden == 0; with scan_layers: {stack}/layers/... with a leading 'layers' axis)
  {stack}/prefix_encoder/embedding                           [prefix_length, kv_heads*head_dim]
  {stack}/prefix_encoder/wi/{kernel,bias}                    [kv_heads*head_dim, prefix_hidden]
  {stack}/prefix_encoder/wo/{kernel,bias}   [prefix_hidden, num_layers, 2, kv_heads, head_dim]
      (prefix_hidden > 0: peft's PrefixEncoder with prefix_projection=True; its token_dim is
      kv_heads*head_dim, which is d_model except under GQA or an explicit head_dim)
  soft_prompt/embedding                                      [prompt_length, d_model]
  {stack}/layers_{i}/{self_attention,mlp}_adapter/{down,up}/{kernel,bias}
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import layers

Array = jax.Array


def kv_dims(cfg) -> tuple[int, int]:
  """(kv_heads, head_dim) of the model's attention."""
  num_kv_heads = cfg.num_kv_heads or cfg.num_heads
  return num_kv_heads, cfg.head_dim or cfg.d_model // cfg.num_heads


def position_shift(cfg, stack_has_prefix: bool = True) -> int:
  """How far the real tokens' positions move: the prefix (if this stack has one) and the prompt."""
  return (cfg.peft.prefix_length if stack_has_prefix else 0) + cfg.peft.prompt_length


def first_segment(segment_ids_BxL: Array) -> Array:
  """[B] the first non-zero segment id of each row (0 for a row of padding only)."""
  first_B = jnp.argmax(segment_ids_BxL != 0, axis=1)
  return jnp.take_along_axis(segment_ids_BxL, first_B[:, None], axis=1)[:, 0]


def last_real_index(segment_ids_BxL: Optional[Array], length: int, batch: int) -> Array:
  """[B] index of each row's last position whose segment id != 0 (no segment ids: length-1)."""
  if segment_ids_BxL is None:
    return jnp.full((batch,), length - 1, jnp.int32)
  from_end_B = jnp.argmax(segment_ids_BxL[:, ::-1] != 0, axis=1)
  return (length - 1 - from_end_B).astype(jnp.int32)


class PrefixTable(nn.Module):
  """One layer's learned prefix keys and values [prefix_length, kv_heads, head_dim] (direct)."""
  cfg: object
  length: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    cfg = self.cfg
    g, k = kv_dims(cfg)
    init = nn.with_logical_partitioning(layers.kernel_init(cfg.init_std),
                                        (None, "kv_heads", "head_dim"))
    param_dtype = jnp.dtype(cfg.param_dtype)
    key_PxGxK = self.param("key", init, (self.length, g, k), param_dtype)
    value_PxGxK = self.param("value", init, (self.length, g, k), param_dtype)
    return key_PxGxK, value_PxGxK


class PrefixEncoder(nn.Module):
  """P-tuning v2 / prefix-tuning reparameterisation, as peft's PrefixEncoder(prefix_projection):

  embedding [P, G*K] -> wi (G*K -> hidden) -> tanh -> wo (hidden -> num_layers*2*G*K).
  Returns every layer's prefix keys and values [num_layers, 2, P, G, K] (2: key, value), in the
  order of peft's flat output (layer-major, then key/value, heads, head_dim).
  """
  cfg: object
  num_layers: int
  length: int
  hidden: int

  @nn.compact
  def __call__(self) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = layers.kernel_init(cfg.init_std)
    g, k = kv_dims(cfg)
    embedding_PxT = self.param(
        "embedding", nn.with_logical_partitioning(init, (None, None)),
        (self.length, g * k), param_dtype)
    h_PxH = jnp.tanh(layers.dense(self.hidden, -1, (None, None), (None,), use_bias=True,
                                  dtype=dtype, param_dtype=param_dtype, init=init,
                                  name="wi")(embedding_PxT.astype(dtype)))
    kv_PxNx2xGxK = layers.dense((self.num_layers, 2, g, k), -1,
                                (None, "layers", None, "kv_heads", "head_dim"),
                                ("layers", None, "kv_heads", "head_dim"), use_bias=True,
                                dtype=dtype, param_dtype=param_dtype, init=init,
                                name="wo")(h_PxH)
    return jnp.transpose(kv_PxNx2xGxK, (1, 2, 0, 3, 4))


def prepend_prefix(prefix_k_PxGxK: Array, prefix_v_PxGxK: Array, k_BxSxGxK: Array,
                   v_BxSxGxK: Array, k_positions_BxS: Array, mask_Bx1xQxS: Array,
                   q_segment_ids_BxQ: Array) -> tuple[Array, Array, Array, Array]:
  """Keys, values, key positions and mask with the P prefix entries in front: positions
  0..P-1, attended by every real query (segment != 0)."""
  b, p = k_BxSxGxK.shape[0], prefix_k_PxGxK.shape[0]
  k_BxSxGxK = jnp.concatenate([jnp.broadcast_to(prefix_k_PxGxK.astype(k_BxSxGxK.dtype)[None],
                                                (b,) + prefix_k_PxGxK.shape), k_BxSxGxK], 1)
  v_BxSxGxK = jnp.concatenate([jnp.broadcast_to(prefix_v_PxGxK.astype(v_BxSxGxK.dtype)[None],
                                                (b,) + prefix_v_PxGxK.shape), v_BxSxGxK], 1)
  k_positions_BxS = jnp.concatenate(
      [jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p)),
       k_positions_BxS.astype(jnp.int32)], axis=1)
  real_query_Bx1xQx1 = (q_segment_ids_BxQ != 0)[:, None, :, None]
  mask_Bx1xQxS = jnp.concatenate(
      [jnp.broadcast_to(real_query_Bx1xQx1, real_query_Bx1xQx1.shape[:3] + (p,)),
       mask_Bx1xQxS], axis=-1)
  return k_BxSxGxK, v_BxSxGxK, k_positions_BxS, mask_Bx1xQxS


class SoftPrompt(nn.Module):
  """Prompt tuning's learned input embeddings [prompt_length, d_model]."""
  cfg: object

  @nn.compact
  def __call__(self) -> Array:
    cfg = self.cfg
    return self.param(
        "embedding", nn.with_logical_partitioning(layers.kernel_init(cfg.init_std),
                                                  (None, "embed")),
        (cfg.peft.prompt_length, cfg.d_model), jnp.dtype(cfg.param_dtype))


def prepend_prompt(prompt_PxD: Array, x_BxLxD: Array, positions_BxL: Array,
                   segment_ids_BxL: Array, first_position: int, *per_token: Optional[Array]):
  """Puts the soft prompt before every row.

  The prompt takes positions first_position.. and the segment id of the row's first segment
  (packed rows: see the model docstrings for which segments see it); the extra [B, L] arrays
  (prefix-LM flags, token types) get zeros for the prompt. Returns (x, positions, segment ids,
  *extras), each P longer.
  """
  b, p = x_BxLxD.shape[0], prompt_PxD.shape[0]
  prompt_BxPxD = jnp.broadcast_to(prompt_PxD.astype(x_BxLxD.dtype)[None],
                                  (b,) + prompt_PxD.shape)
  x_BxLxD = jnp.concatenate([prompt_BxPxD, x_BxLxD], axis=1)
  prompt_positions_BxP = jnp.broadcast_to(first_position + jnp.arange(p, dtype=jnp.int32), (b, p))
  positions_BxL = jnp.concatenate([prompt_positions_BxP, positions_BxL], axis=1)
  prompt_segments_BxP = jnp.broadcast_to(first_segment(segment_ids_BxL)[:, None], (b, p))
  segment_ids_BxL = jnp.concatenate([prompt_segments_BxP.astype(segment_ids_BxL.dtype),
                                     segment_ids_BxL], axis=1)
  extras = tuple(None if a is None else
                 jnp.concatenate([jnp.zeros((b, p), a.dtype), a], axis=1) for a in per_token)
  return (x_BxLxD, positions_BxL, segment_ids_BxL, *extras)


class Adapter(nn.Module):
  """Houlsby bottleneck adapter: y + up(act(down(y))), the up-projection initialised to zero
  (so a fresh adapter is the identity). act is the model's activation (a gated activation's
  gate function)."""
  cfg: object

  @nn.compact
  def __call__(self, y_BxLxD: Array) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    act = layers.get_activation(layers.GATED_ACTIVATIONS.get(cfg.activation, cfg.activation))
    h_BxLxA = layers.dense(cfg.peft.adapter_size, -1, ("embed", None), (None,), use_bias=True,
                           dtype=dtype, param_dtype=param_dtype,
                           init=layers.kernel_init(cfg.init_std), name="down")(y_BxLxD)
    up_BxLxD = layers.dense(cfg.d_model, -1, (None, "embed"), ("embed",), use_bias=True,
                            dtype=dtype, param_dtype=param_dtype,
                            init=nn.initializers.zeros_init(), name="up")(act(h_BxLxA))
    return y_BxLxD + up_BxLxD.astype(y_BxLxD.dtype)
