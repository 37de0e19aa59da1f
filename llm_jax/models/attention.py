"""Attention masks and multi-head attention (MHA / GQA / MQA) with a KV cache for decoding."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import layers
from llm_jax.models import positions
from llm_jax.models import prompts

Array = jax.Array

MASK_TYPES = ("causal", "prefix", "bidirectional", "cross")
RELATIVE_KINDS = ("none", "alibi", "t5", "t5_bidirectional")


def attention_mask(q_positions_BxQ: Array, q_segment_ids_BxQ: Array, k_positions_BxK: Array,
                   k_segment_ids_BxK: Array, mask_type: str,
                   q_prefix_BxQ: Optional[Array] = None,
                   k_prefix_BxK: Optional[Array] = None,
                   k_shared_BxK: Optional[Array] = None) -> Array:
  """[B, 1, Q, K] bool: q attends to k iff seg_q == seg_k != 0 and the mask type allows it.

  'causal': k_pos <= q_pos. 'prefix': causal, or both tokens in the prefix.
  'bidirectional' and 'cross': segments only. Keys flagged in k_shared_BxK (a decoder's soft
  prompt) are in every segment: any real query may attend them, as the mask type allows.
  """
  if mask_type not in MASK_TYPES:
    raise ValueError(f"Unknown mask_type {mask_type!r}; expected one of {MASK_TYPES}")
  q_seg, k_seg = q_segment_ids_BxQ[:, :, None], k_segment_ids_BxK[:, None, :]
  mask_BxQxK = (q_seg == k_seg) & (q_seg != 0)
  if k_shared_BxK is not None:
    mask_BxQxK |= k_shared_BxK.astype(bool)[:, None, :] & (q_seg != 0)
  if mask_type in ("causal", "prefix"):
    allowed_BxQxK = k_positions_BxK[:, None, :] <= q_positions_BxQ[:, :, None]
    if mask_type == "prefix" and q_prefix_BxQ is not None and k_prefix_BxK is not None:
      allowed_BxQxK |= q_prefix_BxQ.astype(bool)[:, :, None] & k_prefix_BxK.astype(bool)[:, None, :]
    mask_BxQxK &= allowed_BxQxK
  return mask_BxQxK[:, None]


class Attention(nn.Module):
  """Multi-head dot-product attention with num_kv_heads key/value heads.

  Self-attention (kv_inputs is None) or cross-attention (kv_inputs = encoder states). With
  decode=True, self-attention appends the new keys/values, positions, segment ids and prefix
  flags to its 'cache' collection at cache_index and attends over the whole cache. Cross-attention
  recomputes keys/values from the encoder states at every call (nothing cached).

  Prefix tuning (self-attention, prefix_length > 0): learned keys/values [P, kv_heads, head_dim]
  (the 'prefix' PrefixTable, or prefix_kv_2xPxGxK from the stack's PrefixEncoder) go before the
  keys, in decode mode before the whole cache at every call (never written into it). Every real
  query (segment != 0) attends them, whatever its segment or the mask type; they have no RoPE
  rotation and positions 0..P-1 for relative biases (ALiBi, T5), as HF's past_key_values.
  shared_positions > 0 (a decoder's soft prompt): keys at positions below it (with a real
  segment) are seen by every segment of a packed row.
  """
  cfg: object
  mask_type: str = "causal"
  relative: str = "none"  # 'none' | 'alibi' | 't5' (unidirectional) | 't5_bidirectional'
  use_rope: bool = False
  init_scale: float = 1.0  # DeepNet beta for the value and output projections
  prefix_length: int = 0  # learned prefix keys/values (self-attention only)
  shared_positions: int = 0  # keys at positions below this are in every segment (soft prompt)

  @nn.compact
  def __call__(self, x_BxQxD: Array, q_positions_BxQ: Array, q_segment_ids_BxQ: Array,
               q_prefix_BxQ: Optional[Array] = None, kv_inputs_BxSxD: Optional[Array] = None,
               kv_segment_ids_BxS: Optional[Array] = None,
               relpos_table_NxH: Optional[Array] = None, deterministic: bool = True,
               decode: bool = False, prefix_kv_2xPxGxK: Optional[Array] = None) -> Array:
    cfg = self.cfg
    if self.relative not in RELATIVE_KINDS:
      raise ValueError(f"Unknown relative bias {self.relative!r}")
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    num_heads = cfg.num_heads
    num_kv_heads = cfg.num_kv_heads or num_heads
    head_dim = cfg.head_dim or cfg.d_model // num_heads
    if num_heads % num_kv_heads:
      raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    is_cross = kv_inputs_BxSxD is not None
    init = layers.kernel_init(cfg.init_std)
    init_scaled = layers.kernel_init(cfg.init_std, self.init_scale)

    def project(x, heads, heads_axis, name, init_fn):
      return layers.dense((heads, head_dim), -1, ("embed", heads_axis, "head_dim"),
                          (heads_axis, "head_dim"), use_bias=cfg.use_bias, dtype=dtype,
                          param_dtype=param_dtype, init=init_fn, name=name,
                          peft=cfg.peft)(x)

    kv_source = kv_inputs_BxSxD if is_cross else x_BxQxD
    q_BxQxHxK = project(x_BxQxD, num_heads, "heads", "query", init)
    k_BxSxGxK = project(kv_source, num_kv_heads, "kv_heads", "key", init)
    v_BxSxGxK = project(kv_source, num_kv_heads, "kv_heads", "value", init_scaled)

    if self.use_rope and not is_cross:
      inv_freq = positions.rope_inv_freq(head_dim, cfg.rope_theta, cfg.rope_scaling,
                                         cfg.rope_scaling_factor)
      q_BxQxHxK = positions.apply_rope(q_BxQxHxK, q_positions_BxQ, inv_freq)
      k_BxSxGxK = positions.apply_rope(k_BxSxGxK, q_positions_BxQ, inv_freq)
    if cfg.scale_attention:
      q_BxQxHxK = q_BxQxHxK * jnp.asarray(head_dim ** -0.5, dtype)
    q_BxQxHxK = nn.with_logical_constraint(q_BxQxHxK, ("batch", "length", "heads", "head_dim"))

    if is_cross:
      k_positions_BxS = None
      k_segment_ids_BxS = kv_segment_ids_BxS
      k_prefix_BxS = None
    else:
      k_positions_BxS, k_segment_ids_BxS, k_prefix_BxS = (
          q_positions_BxQ, q_segment_ids_BxQ, q_prefix_BxQ)
      if decode:
        (k_BxSxGxK, v_BxSxGxK, k_positions_BxS, k_segment_ids_BxS,
         k_prefix_BxS) = self._update_cache(k_BxSxGxK, v_BxSxGxK, q_positions_BxQ,
                                            q_segment_ids_BxQ, q_prefix_BxQ)
    k_shared_BxS = None
    if self.shared_positions and not is_cross:
      k_shared_BxS = (k_positions_BxS < self.shared_positions) & (k_segment_ids_BxS != 0)
    mask_Bx1xQxS = attention_mask(q_positions_BxQ, q_segment_ids_BxQ, k_positions_BxS,
                                  k_segment_ids_BxS, "cross" if is_cross else self.mask_type,
                                  q_prefix_BxQ, k_prefix_BxS, k_shared_BxS)
    if self.prefix_length and not is_cross:
      if prefix_kv_2xPxGxK is None:
        prefix_k_PxGxK, prefix_v_PxGxK = prompts.PrefixTable(cfg, self.prefix_length,
                                                             name="prefix")()
      else:
        prefix_k_PxGxK, prefix_v_PxGxK = prefix_kv_2xPxGxK[0], prefix_kv_2xPxGxK[1]
      k_BxSxGxK, v_BxSxGxK, k_positions_BxS, mask_Bx1xQxS = prompts.prepend_prefix(
          prefix_k_PxGxK, prefix_v_PxGxK, k_BxSxGxK, v_BxSxGxK, k_positions_BxS, mask_Bx1xQxS,
          q_segment_ids_BxQ)
    k_BxSxGxK = nn.with_logical_constraint(k_BxSxGxK, ("batch", "length", "kv_heads", "head_dim"))
    v_BxSxGxK = nn.with_logical_constraint(v_BxSxGxK, ("batch", "length", "kv_heads", "head_dim"))

    bias_BxHxQxS = None
    if self.relative == "alibi":
      bias_BxHxQxS = positions.alibi_bias(q_positions_BxQ, k_positions_BxS, num_heads)
    elif self.relative.startswith("t5"):
      if relpos_table_NxH is None:
        raise ValueError("relative='t5' attention needs relpos_table_NxH")
      bias_BxHxQxS = positions.t5_relative_bias(
          relpos_table_NxH, q_positions_BxQ, k_positions_BxS,
          bidirectional=self.relative == "t5_bidirectional",
          max_distance=cfg.relative_max_distance)

    b, q_len = q_BxQxHxK.shape[:2]
    r = num_heads // num_kv_heads
    q_BxQxGxRxK = q_BxQxHxK.reshape(b, q_len, num_kv_heads, r, head_dim)
    scores_BxGxRxQxS = jnp.einsum("bqgrk,bsgk->bgrqs", q_BxQxGxRxK, k_BxSxGxK).astype(jnp.float32)
    s_len = scores_BxGxRxQxS.shape[-1]
    if bias_BxHxQxS is not None:
      scores_BxGxRxQxS += bias_BxHxQxS.reshape(b, num_kv_heads, r, q_len, s_len)
    scores_BxGxRxQxS = jnp.where(mask_Bx1xQxS[:, :, None], scores_BxGxRxQxS,
                                 jnp.finfo(jnp.float32).min)
    probs_BxGxRxQxS = jax.nn.softmax(scores_BxGxRxQxS, axis=-1).astype(dtype)
    probs_BxGxRxQxS = nn.Dropout(cfg.attention_dropout_rate)(probs_BxGxRxQxS,
                                                            deterministic=deterministic)
    out_BxQxGxRxK = jnp.einsum("bgrqs,bsgk->bqgrk", probs_BxGxRxQxS, v_BxSxGxK)
    out_BxQxHxK = out_BxQxGxRxK.reshape(b, q_len, num_heads, head_dim)
    out_BxQxHxK = nn.with_logical_constraint(out_BxQxHxK, ("batch", "length", "heads", "head_dim"))
    return layers.dense(cfg.d_model, (-2, -1), ("heads", "head_dim", "embed"), ("embed",),
                        use_bias=cfg.use_bias, dtype=dtype, param_dtype=param_dtype,
                        init=init_scaled, name="out", peft=cfg.peft)(out_BxQxHxK)

  def _update_cache(self, k_BxLxGxK, v_BxLxGxK, positions_BxL, segment_ids_BxL, prefix_BxL):
    """Writes L new entries at cache_index; returns the whole cache (keys, values, metadata)."""
    is_initialized = self.has_variable("cache", "cached_key")
    b, l = positions_BxL.shape
    if prefix_BxL is None:
      prefix_BxL = jnp.zeros((b, l), jnp.int32)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, k_BxLxGxK.shape, k_BxLxGxK.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, v_BxLxGxK.shape,
                                 v_BxLxGxK.dtype)
    cached_positions = self.variable("cache", "cached_positions", jnp.zeros, (b, l), jnp.int32)
    cached_segment_ids = self.variable("cache", "cached_segment_ids", jnp.zeros, (b, l),
                                       jnp.int32)
    cached_prefix = self.variable("cache", "cached_prefix", jnp.zeros, (b, l), jnp.int32)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:  # model.init: the inputs' length sets the cache length.
      return k_BxLxGxK, v_BxLxGxK, positions_BxL, segment_ids_BxL, prefix_BxL
    max_len = cached_key.value.shape[1]
    if l > max_len:
      raise ValueError(f"{l} new tokens do not fit in a KV cache of length {max_len}")
    i = cache_index.value
    cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, k_BxLxGxK.astype(cached_key.value.dtype), (0, i, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, v_BxLxGxK.astype(cached_value.value.dtype), (0, i, 0, 0))
    for var, new in ((cached_positions, positions_BxL), (cached_segment_ids, segment_ids_BxL),
                     (cached_prefix, prefix_BxL)):
      var.value = jax.lax.dynamic_update_slice(var.value, new.astype(jnp.int32), (0, i))
    cache_index.value = i + l
    return (cached_key.value, cached_value.value, cached_positions.value,
            cached_segment_ids.value, cached_prefix.value)
