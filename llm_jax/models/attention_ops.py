"""Attention computations as pure functions of (q, k, v, mask or segment ids / positions, bias).

models/attention.py's Attention owns the projections, positions, prefixes and the KV cache and
calls one of these. Shapes: q_BxQxHxK (already scaled by the module), k_BxSxGxK and v_BxSxGxK
with H = G * R query heads per key/value head (GQA). Softmax runs in float32.

  xla_attention              the einsum over a dense [B, 1, Q, S] mask: the reference.
  dot_product_attention      jax.nn.dot_product_attention (cuDNN on NVIDIA GPUs, XLA elsewhere).
  splash_attention           the Pallas TPU splash kernel: segment ids + causal/local/full mask.
  sliding_window_attention   keys in blocks of the window: O(L * window) memory.
  block_sparse_attention     causal local blocks plus each segment's first tokens (global).

Mask rules (every kind): q sees k iff seg_q == seg_k != 0 and the mask type allows it, and
  sliding window W > 0:  q_pos - W < k_pos (and k_pos - W < q_pos when bidirectional);
  block sparse (block size S, N global):  |q_pos // S - k_pos // S| <= 1 (only the previous
    block under a causal mask), or k_pos < N, or q_pos < N (global queries see everything).
Positions restart at 0 in every packed segment, so global tokens are per segment.
The structured kernels (splash, sliding_window_attention, block_sparse_attention) assume each
segment occupies consecutive indices with consecutive positions, as packing produces.
Padding queries (segment 0) see nothing; their outputs differ between kinds and are unused.
"""

import logging
from typing import Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
ProbsFn = Optional[Callable[[Array], Array]]  # e.g. attention-probability dropout

IMPLS = ("auto", "xla", "dot_product_attention", "splash")
KINDS = ("full", "block_sparse", "linear")
SPLASH_BLOCK = 128  # splash's key blocks must be multiples of the TPU lane width

_logged_reasons: set = set()


def log_once(message: str) -> None:
  if message not in _logged_reasons:
    _logged_reasons.add(message)
    logging.info(message)


# ----------------------------------------------------------------------------- mask rules


def window_allowed(q_positions_BxQ: Array, k_positions_BxS: Array, window: int,
                   causal: bool) -> Array:
  """[B, Q, S] bool: k within the sliding window of q."""
  diff_BxQxS = q_positions_BxQ[:, :, None] - k_positions_BxS[:, None, :]
  allowed = diff_BxQxS < window
  if not causal:
    allowed &= -diff_BxQxS < window
  return allowed


def block_sparse_allowed(q_positions_BxQ: Array, k_positions_BxS: Array, block_size: int,
                         num_global: int, causal: bool) -> Array:
  """[B, Q, S] bool: k in q's block or a neighbouring one, or either of them global."""
  q_block, k_block = q_positions_BxQ[:, :, None] // block_size, k_positions_BxS[:, None, :] // block_size
  local = (q_block - k_block <= 1) & (k_block - q_block <= (0 if causal else 1))
  is_global = (k_positions_BxS[:, None, :] < num_global) | (q_positions_BxQ[:, :, None] < num_global)
  return local | is_global


# ----------------------------------------------------------------------------- dense kernels


def _group(q_BxQxHxK: Array, num_kv_heads: int) -> Array:
  b, q_len, h, d = q_BxQxHxK.shape
  return q_BxQxHxK.reshape(b, q_len, num_kv_heads, h // num_kv_heads, d)


def xla_attention(q_BxQxHxK: Array, k_BxSxGxK: Array, v_BxSxGxK: Array, mask_Bx1xQxS: Array,
                  bias_BxHxQxS: Optional[Array] = None, probs_fn: ProbsFn = None) -> Array:
  """softmax(q k^T + bias, masked) v with einsums; the reference for every other kernel."""
  b, q_len, h, d = q_BxQxHxK.shape
  g = k_BxSxGxK.shape[2]
  q_BxQxGxRxK = _group(q_BxQxHxK, g)
  scores_BxGxRxQxS = jnp.einsum("bqgrk,bsgk->bgrqs", q_BxQxGxRxK, k_BxSxGxK).astype(jnp.float32)
  s_len = scores_BxGxRxQxS.shape[-1]
  if bias_BxHxQxS is not None:
    scores_BxGxRxQxS += bias_BxHxQxS.reshape(b, g, h // g, q_len, s_len)
  scores_BxGxRxQxS = jnp.where(mask_Bx1xQxS[:, :, None], scores_BxGxRxQxS,
                               jnp.finfo(jnp.float32).min)
  probs_BxGxRxQxS = jax.nn.softmax(scores_BxGxRxQxS, axis=-1).astype(q_BxQxHxK.dtype)
  if probs_fn is not None:
    probs_BxGxRxQxS = probs_fn(probs_BxGxRxQxS)
  out_BxQxGxRxK = jnp.einsum("bgrqs,bsgk->bqgrk", probs_BxGxRxQxS, v_BxSxGxK)
  return out_BxQxGxRxK.reshape(b, q_len, h, d)


def dot_product_attention(q_BxQxHxK: Array, k_BxSxGxK: Array, v_BxSxGxK: Array,
                          mask_Bx1xQxS: Array, bias_BxHxQxS: Optional[Array] = None,
                          implementation: Optional[str] = None) -> Array:
  """jax.nn.dot_product_attention (queries already scaled); implementation 'cudnn' or None."""
  dtype = q_BxQxHxK.dtype
  bias = None if bias_BxHxQxS is None else bias_BxHxQxS.astype(dtype)
  return jax.nn.dot_product_attention(
      q_BxQxHxK, k_BxSxGxK.astype(dtype), v_BxSxGxK.astype(dtype), bias=bias,
      mask=mask_Bx1xQxS, scale=1.0, implementation=implementation)


# ----------------------------------------------------------------------------- splash (TPU)


def splash_available() -> bool:
  try:
    from jax.experimental.pallas.ops.tpu import splash_attention  # noqa: F401
  except ImportError:
    return False
  return True


def splash_attention(q_BxLxHxK: Array, k_BxLxGxK: Array, v_BxLxGxK: Array,
                     segment_ids_BxL: Array, *, causal: bool, window: int = 0,
                     interpret: bool = False) -> Array:
  """Self-attention by the Pallas splash kernel (one MQA kernel per key/value head).

  The length is padded to a multiple of SPLASH_BLOCK with its own segment id (-1), so padded
  keys are never seen by real queries.
  """
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  b, length, h, d = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]
  pad = (-length) % SPLASH_BLOCK
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q_BxLxHxK, k_BxLxGxK, v_BxLxGxK = (jnp.pad(x, widths) for x in (q_BxLxHxK, k_BxLxGxK,
                                                                     v_BxLxGxK))
    segment_ids_BxL = jnp.pad(segment_ids_BxL, ((0, 0), (0, pad)), constant_values=-1)
  full = length + pad
  shape = (full, full)
  if window:
    mask = splash.LocalMask(shape, (window - 1, 0 if causal else window - 1), offset=0)
  elif causal:
    mask = splash.CausalMask(shape)
  else:
    mask = splash.FullMask(shape)
  blocks = splash.BlockSizes(
      block_q=SPLASH_BLOCK, block_kv=SPLASH_BLOCK, block_kv_compute=SPLASH_BLOCK,
      block_q_dkv=SPLASH_BLOCK, block_kv_dkv=SPLASH_BLOCK, block_kv_dkv_compute=SPLASH_BLOCK,
      block_q_dq=SPLASH_BLOCK, block_kv_dq=SPLASH_BLOCK)
  kernel = splash.make_splash_mha(splash.MultiHeadMask([mask] * (h // g)), block_sizes=blocks,
                                  is_mqa=True, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)

  def one_row(q_GxRxLxK, k_GxLxK, v_GxLxK, segment_ids_L):
    ids = splash.SegmentIds(q=segment_ids_L, kv=segment_ids_L)
    return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(q_GxRxLxK, k_GxLxK,
                                                                      v_GxLxK)

  q_BxGxRxLxK = _group(q_BxLxHxK, g).transpose(0, 2, 3, 1, 4)
  k_BxGxLxK, v_BxGxLxK = k_BxLxGxK.transpose(0, 2, 1, 3), v_BxLxGxK.transpose(0, 2, 1, 3)
  out_BxGxRxLxK = jax.vmap(one_row)(q_BxGxRxLxK, k_BxGxLxK.astype(q_BxLxHxK.dtype),
                                    v_BxGxLxK.astype(q_BxLxHxK.dtype), segment_ids_BxL)
  out_BxLxHxK = out_BxGxRxLxK.transpose(0, 3, 1, 2, 4).reshape(b, full, h, d)
  return out_BxLxHxK[:, :length]


# ----------------------------------------------------------------------------- blocked kernels


def _blocks(x_BxLx_: Array, block: int, fill=0) -> Array:
  """[B, L, ...] -> [B, L // block, block, ...] after padding L up to a multiple of block."""
  b, length = x_BxLx_.shape[:2]
  pad = (-length) % block
  if pad:
    widths = ((0, 0), (0, pad)) + ((0, 0),) * (x_BxLx_.ndim - 2)
    x_BxLx_ = jnp.pad(x_BxLx_, widths, constant_values=fill)
  return x_BxLx_.reshape(b, -1, block, *x_BxLx_.shape[2:])


def _with_neighbours(x_BxNxCx_: Array, before: int, after: int) -> Array:
  """Each block with its `before` previous and `after` next blocks, concatenated in order (zeros
  past the ends): [B, N, C, ...] -> [B, N, (before + 1 + after) * C, ...]."""
  n = x_BxNxCx_.shape[1]
  widths = ((0, 0), (before, after)) + ((0, 0),) * (x_BxNxCx_.ndim - 2)
  padded = jnp.pad(x_BxNxCx_, widths)
  shifted = [padded[:, i:i + n] for i in range(before + 1 + after)]
  return jnp.concatenate(shifted, axis=2)


def _blocked_softmax_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, positions_BxL, segment_ids_BxL,
                               block: int, before: int, after: int, allowed_fn,
                               probs_fn: ProbsFn, extra=None) -> Array:
  """Each query block attends its key block and `before`/`after` neighbours where
  allowed_fn(q_pos_BxNxC, q_seg, k_pos_BxNxS, k_seg) [B, N, C, S] holds. `extra` adds keys per
  query: (scores_BxNxGxRxCxE, v_BxNxCxExGxK) computed by the caller."""
  b, length, h, d = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]
  q_BxNxCxGxRxK = _blocks(_group(q_BxLxHxK, g), block)
  k_BxNxSxGxK = _with_neighbours(_blocks(k_BxLxGxK, block), before, after)
  v_BxNxSxGxK = _with_neighbours(_blocks(v_BxLxGxK, block), before, after)
  q_pos_BxNxC, q_seg_BxNxC = _blocks(positions_BxL, block), _blocks(segment_ids_BxL, block)
  k_pos_BxNxS = _with_neighbours(q_pos_BxNxC, before, after)
  k_seg_BxNxS = _with_neighbours(q_seg_BxNxC, before, after)
  allowed_BxNxCxS = allowed_fn(q_pos_BxNxC, q_seg_BxNxC, k_pos_BxNxS, k_seg_BxNxS)
  scores_BxNxGxRxCxS = jnp.einsum("bncgrk,bnsgk->bngrcs", q_BxNxCxGxRxK,
                                  k_BxNxSxGxK).astype(jnp.float32)
  neg = jnp.finfo(jnp.float32).min
  scores_BxNxGxRxCxS = jnp.where(allowed_BxNxCxS[:, :, None, None], scores_BxNxGxRxCxS, neg)
  s_len = scores_BxNxGxRxCxS.shape[-1]
  if extra is not None:
    scores_BxNxGxRxCxS = jnp.concatenate([scores_BxNxGxRxCxS, extra[0]], axis=-1)
  probs = jax.nn.softmax(scores_BxNxGxRxCxS, axis=-1).astype(q_BxLxHxK.dtype)
  if probs_fn is not None:
    probs = probs_fn(probs)
  out_BxNxCxGxRxK = jnp.einsum("bngrcs,bnsgk->bncgrk", probs[..., :s_len], v_BxNxSxGxK)
  if extra is not None:
    out_BxNxCxGxRxK += jnp.einsum("bngrce,bncegk->bncgrk", probs[..., s_len:], extra[1])
  return out_BxNxCxGxRxK.reshape(b, -1, h, d)[:, :length]


def _same_real_segment(q_pos, q_seg, k_pos, k_seg, causal):
  mask = (q_seg[..., :, None] == k_seg[..., None, :]) & (q_seg[..., :, None] != 0)
  if causal:
    mask &= k_pos[..., None, :] <= q_pos[..., :, None]
  return mask


def sliding_window_attention(q_BxLxHxK: Array, k_BxLxGxK: Array, v_BxLxGxK: Array,
                             positions_BxL: Array, segment_ids_BxL: Array, window: int,
                             causal: bool = True, probs_fn: ProbsFn = None) -> Array:
  """Self-attention within a sliding window, keys in blocks of `window`: O(L * window)."""
  block = min(window, q_BxLxHxK.shape[1])

  def allowed(q_pos, q_seg, k_pos, k_seg):
    diff = q_pos[..., :, None] - k_pos[..., None, :]
    in_window = (diff < window) & ((-diff < window) if not causal else True)
    return _same_real_segment(q_pos, q_seg, k_pos, k_seg, causal) & in_window

  return _blocked_softmax_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, positions_BxL,
                                    segment_ids_BxL, block, 1, 0 if causal else 1, allowed,
                                    probs_fn)


def block_sparse_attention(q_BxLxHxK: Array, k_BxLxGxK: Array, v_BxLxGxK: Array,
                           positions_BxL: Array, segment_ids_BxL: Array, block_size: int,
                           num_global: int, probs_fn: ProbsFn = None) -> Array:
  """Causal block-sparse self-attention: O(L * (3 * block_size + num_global)) scores.

  Local part: a query's own position block and the previous one lie within index blocks
  c-2..c of its index block c (segments need not start on a block boundary). Global part: the
  first num_global tokens of the query's segment, gathered at index i - pos_i + j.
  """
  b, length, h, d = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]

  def local(q_pos, q_seg, k_pos, k_seg):
    q_block, k_block = q_pos[..., :, None] // block_size, k_pos[..., None, :] // block_size
    near = (q_block - k_block <= 1) & (k_pos[..., None, :] >= num_global)  # globals: below
    return _same_real_segment(q_pos, q_seg, k_pos, k_seg, True) & near

  extra = None
  if num_global:
    j_E = jnp.arange(num_global, dtype=jnp.int32)
    index_BxLxE = (jnp.arange(length, dtype=jnp.int32)[None, :, None] - positions_BxL[:, :, None]
                   + j_E)
    index_BxLxE = jnp.clip(index_BxLxE, 0, length - 1)
    take = jax.vmap(lambda x, i: x[i])  # per row: x [L, ...], i [L, E] -> [L, E, ...]
    k_BxLxExGxK, v_BxLxExGxK = take(k_BxLxGxK, index_BxLxE), take(v_BxLxGxK, index_BxLxE)
    k_pos_BxLxE, k_seg_BxLxE = take(positions_BxL, index_BxLxE), take(segment_ids_BxL, index_BxLxE)
    seen_BxLxE = ((k_pos_BxLxE == j_E) & (k_seg_BxLxE == segment_ids_BxL[:, :, None])
                  & (segment_ids_BxL[:, :, None] != 0) & (j_E <= positions_BxL[:, :, None]))
    scores_BxLxGxRxE = jnp.einsum("blgrk,blegk->blgre", _group(q_BxLxHxK, g),
                                  k_BxLxExGxK).astype(jnp.float32)
    scores_BxLxGxRxE = jnp.where(seen_BxLxE[:, :, None, None], scores_BxLxGxRxE,
                                 jnp.finfo(jnp.float32).min)
    scores_BxNxGxRxCxE = _blocks(scores_BxLxGxRxE, block_size).transpose(0, 1, 3, 4, 2, 5)
    extra = (scores_BxNxGxRxCxE, _blocks(v_BxLxExGxK, block_size))
  return _blocked_softmax_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, positions_BxL,
                                    segment_ids_BxL, block_size, 2, 0, local, probs_fn, extra)


# ----------------------------------------------------------------------------- choice


def cudnn_blocker(dtype, head_dim: int, dropout: bool) -> Optional[str]:
  """Why cuDNN flash attention cannot run (None: it can)."""
  if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
    return f"cuDNN attention needs bfloat16/float16, dtype is {jnp.dtype(dtype).name}"
  if head_dim % 8 or head_dim > 128:
    return f"cuDNN attention needs head_dim <= 128 and a multiple of 8, got {head_dim}"
  if dropout:
    return "dot_product_attention has no attention dropout"
  return None


def choose_impl(requested: str, *, platform: str, dtype, head_dim: int, dropout: bool,
                splash_blocker: Optional[str], interpret: bool = False) -> tuple[str, Optional[str]]:
  """(impl, dot_product_attention implementation) for model.attention_impl=requested.

  splash_blocker: why this call cannot use splash (None: it can). 'auto' logs once why it
  fell back to 'xla'; an explicit impl that cannot run raises, naming the field.
  """
  if requested not in IMPLS:
    raise ValueError(f"model.attention_impl={requested!r} is not one of {IMPLS}")
  if requested == "xla":
    return "xla", None
  if requested == "splash":
    if platform != "tpu" and not interpret:
      splash_blocker = splash_blocker or (
          f"the splash kernel needs a TPU, the platform is {platform!r} (set "
          f"model.attention_interpret=True to run it in Pallas interpret mode)")
    if dropout:
      splash_blocker = "the splash kernel has no attention dropout"
    if splash_blocker:
      raise ValueError(f"model.attention_impl='splash' cannot be used: {splash_blocker}")
    return "splash", None
  cudnn = cudnn_blocker(dtype, head_dim, dropout) if platform == "gpu" else "not a GPU"
  if requested == "dot_product_attention":
    if dropout:
      raise ValueError("model.attention_impl='dot_product_attention' has no attention dropout; "
                       "set model.attention_dropout_rate=0 or model.attention_impl='xla'")
    return "dot_product_attention", (None if cudnn else "cudnn")
  if platform == "tpu" and splash_blocker is None and not dropout:
    return "splash", None
  if platform == "gpu" and cudnn is None:
    return "dot_product_attention", "cudnn"
  if platform == "tpu":
    reason = splash_blocker or "attention dropout is on"
  elif platform == "gpu":
    reason = cudnn
  else:
    reason = f"no fused attention kernel on {platform!r}"
  log_once(f"model.attention_impl='auto' uses 'xla': {reason}")
  return "xla", None


def splash_shape_blocker(length: int, platform: str) -> Optional[str]:
  if not splash_available():
    return "jax.experimental.pallas.ops.tpu.splash_attention is not importable"
  if platform == "tpu" and length % SPLASH_BLOCK:
    return f"the length {length} is not a multiple of {SPLASH_BLOCK}"
  return None
