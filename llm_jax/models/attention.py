"""Attention masks and the multi-head attention module (MHA / GQA / MQA) with its KV cache.

The module owns projections, positions, prefixes and the cache; the computation itself is a pure
function in attention_ops (softmax kinds) or linear_attention, chosen by the model config:

  model.attention_kind   'full' (softmax; with model.sliding_window > 0 restricted to the window),
                         'block_sparse' (local position blocks + global tokens) or 'linear'
                         (elu+1 kernelised). It applies to self-attention; cross-attention is full.
  model.attention_impl   how softmax attention runs: 'auto' | 'xla' | 'dot_product_attention' |
                         'splash' (see attention_ops.choose_impl).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import attention_ops
from llm_jax.models import layers
from llm_jax.models import linear_attention
from llm_jax.models import positions
from llm_jax.models import prompts

Array = jax.Array

MASK_TYPES = ("causal", "prefix", "bidirectional", "cross")
RELATIVE_KINDS = ("none", "alibi", "t5", "t5_bidirectional")


def attention_mask(q_positions_BxQ: Array, q_segment_ids_BxQ: Array, k_positions_BxK: Array,
                   k_segment_ids_BxK: Array, mask_type: str,
                   q_prefix_BxQ: Optional[Array] = None,
                   k_prefix_BxK: Optional[Array] = None,
                   k_shared_BxK: Optional[Array] = None, sliding_window: int = 0,
                   block_sparse: Optional[tuple[int, int]] = None) -> Array:
  """[B, 1, Q, K] bool: q attends to k iff seg_q == seg_k != 0 and the mask type allows it.

  'causal': k_pos <= q_pos. 'prefix': causal, or both tokens in the prefix.
  'bidirectional' and 'cross': segments only. Keys flagged in k_shared_BxK (a decoder's soft
  prompt) are in every segment: any real query may attend them, as the mask type allows.
  sliding_window > 0 and block_sparse = (block_size, num_global) restrict it further (see
  attention_ops for their rules).
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
  causal = mask_type != "bidirectional"
  if sliding_window:
    mask_BxQxK &= attention_ops.window_allowed(q_positions_BxQ, k_positions_BxK, sliding_window,
                                               causal)
  if block_sparse is not None:
    mask_BxQxK &= attention_ops.block_sparse_allowed(q_positions_BxQ, k_positions_BxK,
                                                     *block_sparse, causal)
  return mask_BxQxK[:, None]


def parse_window_layers(spec: str, num_layers: int) -> tuple[int, ...]:
  """Layer indices model.sliding_window_layers selects: 'all', 'every:N' (0, N, 2N, ...) or a
  comma-separated list of indices such as '0,2,5'."""
  spec = spec.strip()
  if spec == "all":
    return tuple(range(num_layers))
  if spec.startswith("every:"):
    every = int(spec[len("every:"):])
    if every <= 0:
      raise ValueError(f"model.sliding_window_layers={spec!r}: N must be positive")
    return tuple(range(0, num_layers, every))
  indices = tuple(int(i) for i in spec.split(",") if i.strip())
  bad = [i for i in indices if not 0 <= i < num_layers]
  if bad or not indices:
    raise ValueError(f"model.sliding_window_layers={spec!r} must be 'all', 'every:N' or layer "
                     f"indices in [0, {num_layers}); got {bad or 'none'}")
  return indices


def layer_window(cfg, layer_index: int, num_layers: int) -> int:
  """The sliding window of self-attention layer `layer_index` (0 = none)."""
  window = cfg.get("sliding_window", 0) or 0
  if not window:
    return 0
  selected = parse_window_layers(cfg.get("sliding_window_layers", "all"), num_layers)
  return window if layer_index in selected else 0


class Attention(nn.Module):
  """Multi-head attention with num_kv_heads key/value heads.

  Self-attention (kv_inputs is None) or cross-attention (kv_inputs = encoder states). With
  decode=True, self-attention appends the new keys/values, positions, segment ids and prefix
  flags to its 'cache' collection at cache_index and attends over the whole cache. With a
  sliding window shorter than the cache, the cache is a ring buffer of window entries: each call
  attends the ring plus its new keys, then writes the newest window of them. Linear attention
  caches only its recurrent state ('linear_kv' [B, kv_heads, head_dim, head_dim + 1] and
  'linear_segment' [B]). Cross-attention recomputes keys/values from the encoder states at every
  call (nothing cached).

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
  sliding_window: int = 0  # this layer's window (see layer_window); self-attention only

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
    kind = "full" if is_cross else cfg.get("attention_kind", "full")
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

    if kind == "linear":
      out_BxQxHxK = self._linear(q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, q_segment_ids_BxQ, decode)
    else:
      out_BxQxHxK = self._softmax(
          q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, kind, q_positions_BxQ, q_segment_ids_BxQ,
          q_prefix_BxQ, is_cross, kv_segment_ids_BxS, relpos_table_NxH, deterministic, decode,
          prefix_kv_2xPxGxK)
    out_BxQxHxK = nn.with_logical_constraint(out_BxQxHxK, ("batch", "length", "heads", "head_dim"))
    return layers.dense(cfg.d_model, (-2, -1), ("heads", "head_dim", "embed"), ("embed",),
                        use_bias=cfg.use_bias, dtype=dtype, param_dtype=param_dtype,
                        init=init_scaled, name="out", peft=cfg.peft)(out_BxQxHxK)

  def _softmax(self, q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, kind, q_positions_BxQ, q_segment_ids_BxQ,
               q_prefix_BxQ, is_cross, kv_segment_ids_BxS, relpos_table_NxH, deterministic,
               decode, prefix_kv_2xPxGxK) -> Array:
    """Full / sliding-window / block-sparse softmax attention over the (cached) keys."""
    cfg = self.cfg
    window = 0 if is_cross else self.sliding_window
    block_sparse = ((cfg.block_sparse_block_size, cfg.block_sparse_global_tokens)
                    if kind == "block_sparse" else None)
    dropout = cfg.attention_dropout_rate > 0 and not deterministic
    probs_fn = None
    if cfg.attention_dropout_rate > 0:
      probs_fn = lambda p: nn.Dropout(cfg.attention_dropout_rate)(p, deterministic=deterministic)

    if is_cross:
      k_positions_BxS, k_segment_ids_BxS, k_prefix_BxS = None, kv_segment_ids_BxS, None
    else:
      k_positions_BxS, k_segment_ids_BxS, k_prefix_BxS = (
          q_positions_BxQ, q_segment_ids_BxQ, q_prefix_BxQ)
      if decode:
        (k_BxSxGxK, v_BxSxGxK, k_positions_BxS, k_segment_ids_BxS,
         k_prefix_BxS) = self._update_cache(k_BxSxGxK, v_BxSxGxK, q_positions_BxQ,
                                            q_segment_ids_BxQ, q_prefix_BxQ, window)

    # Structured kernels read positions and segment ids directly: self-attention over the
    # call's own tokens, with no bias, prefix keys or shared keys.
    blocker = None
    if decode:
      blocker = "cached decoding attends a KV cache"
    elif is_cross or self.mask_type not in ("causal", "bidirectional"):
      blocker = f"the {'cross' if is_cross else self.mask_type} mask is not a static mask"
    elif self.relative != "none" or self.prefix_length or self.shared_positions:
      blocker = "relative biases, prefix tuning and soft prompts need a dense mask"
    causal = self.mask_type == "causal"
    requested = cfg.get("attention_impl", "auto")
    platform = jax.default_backend()
    impl, implementation = "xla", None
    if kind == "full":
      splash_blocker = blocker or attention_ops.splash_shape_blocker(q_BxQxHxK.shape[1], platform)
      if requested == "splash" and decode:
        attention_ops.log_once("model.attention_impl='splash' decodes with 'xla': " + blocker)
        requested = "xla"
      impl, implementation = attention_ops.choose_impl(
          requested, platform=platform, dtype=q_BxQxHxK.dtype, head_dim=q_BxQxHxK.shape[-1],
          dropout=dropout, splash_blocker=splash_blocker,
          interpret=cfg.get("attention_interpret", False))
    if blocker is None:
      if impl == "splash":
        return attention_ops.splash_attention(
            q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, q_segment_ids_BxQ, causal=causal, window=window,
            interpret=cfg.get("attention_interpret", False) or platform != "tpu")
      if kind == "block_sparse" and causal:
        return attention_ops.block_sparse_attention(
            q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, q_positions_BxQ, q_segment_ids_BxQ,
            *block_sparse, probs_fn=probs_fn)
      if window and window < q_BxQxHxK.shape[1] and impl == "xla":
        return attention_ops.sliding_window_attention(
            q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, q_positions_BxQ, q_segment_ids_BxQ, window,
            causal=causal, probs_fn=probs_fn)

    k_shared_BxS = None
    if self.shared_positions and not is_cross:
      k_shared_BxS = (k_positions_BxS < self.shared_positions) & (k_segment_ids_BxS != 0)
    mask_Bx1xQxS = attention_mask(q_positions_BxQ, q_segment_ids_BxQ, k_positions_BxS,
                                  k_segment_ids_BxS, "cross" if is_cross else self.mask_type,
                                  q_prefix_BxQ, k_prefix_BxS, k_shared_BxS, window, block_sparse)
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
      bias_BxHxQxS = positions.alibi_bias(q_positions_BxQ, k_positions_BxS, cfg.num_heads)
    elif self.relative.startswith("t5"):
      if relpos_table_NxH is None:
        raise ValueError("relative='t5' attention needs relpos_table_NxH")
      bias_BxHxQxS = positions.t5_relative_bias(
          relpos_table_NxH, q_positions_BxQ, k_positions_BxS,
          bidirectional=self.relative == "t5_bidirectional",
          max_distance=cfg.relative_max_distance)
    if impl == "dot_product_attention":
      return attention_ops.dot_product_attention(q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, mask_Bx1xQxS,
                                                 bias_BxHxQxS, implementation)
    return attention_ops.xla_attention(q_BxQxHxK, k_BxSxGxK, v_BxSxGxK, mask_Bx1xQxS,
                                       bias_BxHxQxS, probs_fn)

  def _linear(self, q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, decode) -> Array:
    """Linear attention; with decode=True it carries the recurrent state in the cache."""
    cfg = self.cfg
    chunk = cfg.linear_attention_chunk
    if self.mask_type == "bidirectional":
      return linear_attention.bidirectional(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL,
                                            chunk)
    b, length, g, d = k_BxLxGxK.shape
    empty = linear_attention.empty_state(b, g, d)
    if not decode:
      return linear_attention.causal(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, empty,
                                     chunk)[0]
    is_initialized = self.has_variable("cache", "linear_kv")
    kv = self.variable("cache", "linear_kv", lambda: empty.kv_BxGxKxV)
    segment = self.variable("cache", "linear_segment", lambda: empty.segment_B)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    state = linear_attention.LinearState(kv.value, segment.value)
    if length == 1:
      out_BxHxK, state = linear_attention.step(q_BxLxHxK[:, 0], k_BxLxGxK[:, 0],
                                               v_BxLxGxK[:, 0], segment_ids_BxL[:, 0], state)
      out_BxLxHxK = out_BxHxK[:, None]
    else:
      out_BxLxHxK, state = linear_attention.causal(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK,
                                                   segment_ids_BxL, state, chunk)
    if is_initialized:
      kv.value, segment.value = state.kv_BxGxKxV, state.segment_B
      cache_index.value = cache_index.value + length
    return out_BxLxHxK

  def _update_cache(self, k_BxLxGxK, v_BxLxGxK, positions_BxL, segment_ids_BxL, prefix_BxL,
                    window: int = 0):
    """Writes L new entries at cache_index; returns the keys, values and metadata to attend.

    The cache length is the inputs' length at model.init; with a window shorter than that it is
    a ring buffer of `window` entries (slot = index % window).
    """
    is_initialized = self.has_variable("cache", "cached_key")
    b, l = positions_BxL.shape
    size = window if window and window < l and not is_initialized else l
    if prefix_BxL is None:
      prefix_BxL = jnp.zeros((b, l), jnp.int32)
    kv_shape = (b, size) + k_BxLxGxK.shape[2:]
    cached_key = self.variable("cache", "cached_key", jnp.zeros, kv_shape, k_BxLxGxK.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, kv_shape, v_BxLxGxK.dtype)
    cached_positions = self.variable("cache", "cached_positions", jnp.zeros, (b, size), jnp.int32)
    cached_segment_ids = self.variable("cache", "cached_segment_ids", jnp.zeros, (b, size),
                                       jnp.int32)
    cached_prefix = self.variable("cache", "cached_prefix", jnp.zeros, (b, size), jnp.int32)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:  # model.init: the inputs' length sets the cache length.
      return k_BxLxGxK, v_BxLxGxK, positions_BxL, segment_ids_BxL, prefix_BxL
    max_len = cached_key.value.shape[1]
    metadata = ((cached_positions, positions_BxL), (cached_segment_ids, segment_ids_BxL),
                (cached_prefix, prefix_BxL))
    i = cache_index.value
    if window and max_len == window:
      return self._update_ring(cached_key, cached_value, metadata, cache_index, k_BxLxGxK,
                               v_BxLxGxK)
    if l > max_len:
      raise ValueError(f"{l} new tokens do not fit in a KV cache of length {max_len}")
    cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, k_BxLxGxK.astype(cached_key.value.dtype), (0, i, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, v_BxLxGxK.astype(cached_value.value.dtype), (0, i, 0, 0))
    for var, new in metadata:
      var.value = jax.lax.dynamic_update_slice(var.value, new.astype(jnp.int32), (0, i))
    cache_index.value = i + l
    return (cached_key.value, cached_value.value, cached_positions.value,
            cached_segment_ids.value, cached_prefix.value)

  @staticmethod
  def _update_ring(cached_key, cached_value, metadata, cache_index, k_BxLxGxK, v_BxLxGxK):
    """Ring buffer: returns (ring before this call) ++ (new entries), then writes the newest
    min(L, window) new entries at slots (index % window)."""
    window, l = cached_key.value.shape[1], k_BxLxGxK.shape[1]
    attended = [jnp.concatenate([cached_key.value, k_BxLxGxK.astype(cached_key.value.dtype)], 1),
                jnp.concatenate([cached_value.value,
                                 v_BxLxGxK.astype(cached_value.value.dtype)], 1)]
    attended += [jnp.concatenate([var.value, new.astype(jnp.int32)], 1) for var, new in metadata]
    n = min(l, window)
    slots_N = (cache_index.value + l - n + jnp.arange(n)) % window
    cached_key.value = cached_key.value.at[:, slots_N].set(attended[0][:, -n:])
    cached_value.value = cached_value.value.at[:, slots_N].set(attended[1][:, -n:])
    for (var, _), new in zip(metadata, attended[2:]):
      var.value = var.value.at[:, slots_N].set(new[:, -n:])
    cache_index.value = cache_index.value + l
    return tuple(attended)
