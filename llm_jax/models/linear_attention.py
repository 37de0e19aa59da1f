"""Kernelised linear attention (Katharopoulos et al. 2020) with the elu+1 feature map.

  out_i = phi(q_i) . S_i / (phi(q_i) . z_i + eps),  S_i = sum_j phi(k_j) v_j^T,  z_i = sum_j phi(k_j)

over the keys j of q_i's segment (j <= i when causal). Values get a column of ones appended so
one state S_aug [K, K + 1] carries both S and z. Three forms of the same sums:

  causal_sums:  chunk-wise (quadratic inside a chunk, the state carried between chunks);
  step:         the recurrent form, one token at a time (KV-cache decoding: constant-size state);
  bidirectional_sums: causal sums forwards plus backwards, minus each token's own term.

Segments (packing) must be contiguous: the state resets whenever the segment id changes.
Padding queries (segment 0) output zeros. Everything runs in float32.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
EPS = 1e-6


class LinearState(NamedTuple):
  kv_BxGxKxV: Array  # float32 sum of phi(k) [v, 1]^T over the current segment so far
  segment_B: Array  # int32 segment id the state belongs to (0: empty)


def empty_state(batch: int, num_kv_heads: int, head_dim: int) -> LinearState:
  return LinearState(jnp.zeros((batch, num_kv_heads, head_dim, head_dim + 1), jnp.float32),
                     jnp.zeros((batch,), jnp.int32))


def feature_map(x: Array) -> Array:
  return jax.nn.elu(x.astype(jnp.float32)) + 1.0


def _with_ones(v_BxLxGxK: Array) -> Array:
  ones = jnp.ones(v_BxLxGxK.shape[:-1] + (1,), jnp.float32)
  return jnp.concatenate([v_BxLxGxK.astype(jnp.float32), ones], axis=-1)


def _normalise(sums_BxLxGxRxV: Array, segment_ids_BxL: Array, dtype) -> Array:
  b, length, g, r, v = sums_BxLxGxRxV.shape
  out = sums_BxLxGxRxV[..., :-1] / (sums_BxLxGxRxV[..., -1:] + EPS)
  out = jnp.where((segment_ids_BxL != 0)[:, :, None, None, None], out, 0.0)
  return out.reshape(b, length, g * r, v - 1).astype(dtype)


def causal_sums(q_BxLxHxK: Array, k_BxLxGxK: Array, v_BxLxGxK: Array, segment_ids_BxL: Array,
                state: LinearState, chunk_size: int) -> tuple[Array, LinearState]:
  """Unnormalised causal sums phi(q_i) . S_aug_i [B, L, G, R, K + 1] and the final state."""
  b, length, h, d = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]
  chunk = min(chunk_size, length)
  pad = (-length) % chunk
  valid_BxL = jnp.ones((b, length), jnp.float32)
  phi_q = feature_map(q_BxLxHxK).reshape(b, length, g, h // g, d)
  phi_k, v_aug = feature_map(k_BxLxGxK), _with_ones(v_BxLxGxK)
  segments = segment_ids_BxL.astype(jnp.int32)
  if pad:  # padding continues the last segment with no keys, so the final state is unchanged
    widths = lambda x: ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)
    phi_q, phi_k, v_aug, valid_BxL = (jnp.pad(x, widths(x)) for x in (phi_q, phi_k, v_aug,
                                                                       valid_BxL))
    segments = jnp.pad(segments, ((0, 0), (0, pad)), mode="edge")
  phi_k = phi_k * valid_BxL[:, :, None, None]
  n = (length + pad) // chunk

  def to_chunks(x):  # [B, L, ...] -> [N, B, C, ...]
    return jnp.moveaxis(x.reshape(b, n, chunk, *x.shape[2:]), 1, 0)

  causal_CxC = jnp.tril(jnp.ones((chunk, chunk), bool))

  def one_chunk(carry: LinearState, xs):
    q_BxCxGxRxK, k_BxCxGxK, v_BxCxGxV, seg_BxC = xs
    same_BxCxC = (seg_BxC[:, :, None] == seg_BxC[:, None, :]) & causal_CxC
    scores_BxGxRxCxC = jnp.einsum("bcgrk,bsgk->bgrcs", q_BxCxGxRxK, k_BxCxGxK)
    scores_BxGxRxCxC = jnp.where(same_BxCxC[:, None, None], scores_BxGxRxCxC, 0.0)
    intra = jnp.einsum("bgrcs,bsgv->bcgrv", scores_BxGxRxCxC, v_BxCxGxV)
    continues_BxC = seg_BxC == carry.segment_B[:, None]
    inter = jnp.einsum("bcgrk,bgkv->bcgrv", q_BxCxGxRxK, carry.kv_BxGxKxV)
    sums = intra + jnp.where(continues_BxC[:, :, None, None, None], inter, 0.0)
    last_B = seg_BxC[:, -1]
    in_last_BxC = (seg_BxC == last_B[:, None]).astype(jnp.float32)
    added = jnp.einsum("bsgk,bsgv,bs->bgkv", k_BxCxGxK, v_BxCxGxV, in_last_BxC)
    kept = jnp.where((last_B == carry.segment_B)[:, None, None, None], carry.kv_BxGxKxV, 0.0)
    return LinearState(kept + added, last_B), sums

  final, sums_NxBxCxGxRxV = jax.lax.scan(
      one_chunk, state, (to_chunks(phi_q), to_chunks(phi_k), to_chunks(v_aug), to_chunks(segments)))
  sums = jnp.moveaxis(sums_NxBxCxGxRxV, 0, 1).reshape(b, n * chunk, *sums_NxBxCxGxRxV.shape[3:])
  return sums[:, :length], final


def causal(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, state: LinearState,
           chunk_size: int) -> tuple[Array, LinearState]:
  """Causal linear attention [B, L, H, K] (chunk-wise) and the state after the last token."""
  sums, final = causal_sums(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, state, chunk_size)
  return _normalise(sums, segment_ids_BxL, q_BxLxHxK.dtype), final


def step(q_BxHxK: Array, k_BxGxK: Array, v_BxGxK: Array, segment_ids_B: Array,
         state: LinearState) -> tuple[Array, LinearState]:
  """One token of causal linear attention, the recurrent form: [B, H, K] and the new state."""
  b, h, d = q_BxHxK.shape
  g = k_BxGxK.shape[1]
  segment_ids_B = segment_ids_B.astype(jnp.int32)
  kept = jnp.where((segment_ids_B == state.segment_B)[:, None, None, None], state.kv_BxGxKxV, 0.0)
  kv = kept + jnp.einsum("bgk,bgv->bgkv", feature_map(k_BxGxK), _with_ones(v_BxGxK))
  sums = jnp.einsum("bgrk,bgkv->bgrv", feature_map(q_BxHxK).reshape(b, g, h // g, d), kv)
  out = _normalise(sums[:, None], segment_ids_B[:, None], q_BxHxK.dtype)[:, 0]
  return out, LinearState(kv, segment_ids_B)


def bidirectional(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, chunk_size: int) -> Array:
  """Non-causal linear attention within each segment: forward + backward - own term."""
  b, length, h, d = q_BxLxHxK.shape
  g = k_BxLxGxK.shape[2]
  empty = empty_state(b, g, d)
  forward, _ = causal_sums(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, segment_ids_BxL, empty, chunk_size)
  flip = lambda x: jnp.flip(x, axis=1)
  backward, _ = causal_sums(flip(q_BxLxHxK), flip(k_BxLxGxK), flip(v_BxLxGxK),
                            flip(segment_ids_BxL), empty, chunk_size)
  phi_q = feature_map(q_BxLxHxK).reshape(b, length, g, h // g, d)
  own = jnp.einsum("blgrk,blgk->blgr", phi_q, feature_map(k_BxLxGxK))[..., None] * _with_ones(
      v_BxLxGxK)[:, :, :, None]
  return _normalise(forward + flip(backward) - own, segment_ids_BxL, q_BxLxHxK.dtype)
