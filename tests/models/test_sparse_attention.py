"""Block-sparse and linear attention: kernels against references, packing, cached decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import unfreeze

from llm_jax.models import build_model, linear_attention
from decoding_testing import assert_cached_decoding_matches_full_forward, packed_equals_separate
from model_testing import small_config
from test_attention_ops import POSITIONS, SEGMENTS, qkv


def dense_linear_reference(q, k, v, segments, causal):
  """Linear attention from its definition, with an explicit [Q, K] mask."""
  b, length, h, d = q.shape
  g = k.shape[2]
  phi_q = linear_attention.feature_map(q).reshape(b, length, g, h // g, d)
  phi_k = linear_attention.feature_map(k)
  mask = (segments[:, :, None] == segments[:, None, :])
  if causal:
    mask &= np.tril(np.ones((length, length), bool))
  scores = jnp.einsum("bqgrk,bsgk->bgrqs", phi_q, phi_k) * mask[:, None, None]
  num = jnp.einsum("bgrqs,bsgk->bqgrk", scores, v)
  den = scores.sum(-1).transpose(0, 3, 1, 2)[..., None]
  out = (num / (den + linear_attention.EPS)).reshape(b, length, h, d)
  return jnp.where((segments != 0)[:, :, None, None], out, 0.0)


@pytest.mark.parametrize("chunk", [pytest.param(4, marks=pytest.mark.slow), 5,
                                   pytest.param(16, marks=pytest.mark.slow)])  # 5: the length is not a multiple of the chunk
def test_chunkwise_linear_attention_equals_its_definition(chunk):
  q, k, v, _ = qkv()
  seg = jnp.asarray(SEGMENTS)
  empty = linear_attention.empty_state(2, 2, 8)
  out, _ = jax.jit(linear_attention.causal, static_argnums=5)(q, k, v, seg, empty, chunk)
  np.testing.assert_allclose(out, dense_linear_reference(q, k, v, SEGMENTS, True), atol=1e-5)


def test_bidirectional_linear_attention_equals_its_definition():
  q, k, v, _ = qkv()
  out = jax.jit(linear_attention.bidirectional, static_argnums=4)(q, k, v, jnp.asarray(SEGMENTS), 4)
  np.testing.assert_allclose(out, dense_linear_reference(q, k, v, SEGMENTS, False), atol=1e-5)


def test_chunkwise_and_recurrent_linear_attention_agree():
  q, k, v, _ = qkv()
  seg = jnp.asarray(SEGMENTS)
  empty = linear_attention.empty_state(2, 2, 8)
  chunked, final = jax.jit(linear_attention.causal, static_argnums=5)(q, k, v, seg, empty, 4)

  @jax.jit
  def recurrent(q, k, v, seg):
    def one(state, xs):
      out, state = linear_attention.step(*xs, state)
      return state, out
    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, seg))
    state, outs = jax.lax.scan(one, empty, xs)
    return jnp.moveaxis(outs, 0, 1), state

  stepped, state = recurrent(q, k, v, seg)
  np.testing.assert_allclose(chunked, stepped, atol=1e-5)
  np.testing.assert_allclose(final.kv_BxGxKxV, state.kv_BxGxKxV, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(final.segment_B, [0, 1])


KINDS = {
    "linear": {"attention_kind": "linear", "linear_attention_chunk": 4},
    "block_sparse": {"attention_kind": "block_sparse", "block_sparse_block_size": 3,
                     "block_sparse_global_tokens": 2},
}


@pytest.mark.parametrize("kind", [
    "linear", pytest.param("block_sparse", marks=pytest.mark.slow)])
def test_packed_rows_equal_separate_sequences(kind):
  packed_equals_separate(small_config("llama_tiny", **KINDS[kind]))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cached_decoding_matches_full_forward(kind):
  cache = assert_cached_decoding_matches_full_forward(small_config("llama_tiny", **KINDS[kind]))
  attention_cache = unfreeze(cache)["decoder"]["layers_0"]["self_attention"]
  if kind == "linear":  # a constant-size recurrent state, no keys
    assert attention_cache["linear_kv"].shape == (2, 2, 8, 9)
    assert "cached_key" not in attention_cache


def test_linear_attention_rejects_what_it_cannot_compute():
  with pytest.raises(ValueError, match=r"model.attention_kind='linear'.*model.attention='prefix'"):
    build_model(small_config("llama_tiny", attention_kind="linear", attention="prefix"))
  with pytest.raises(ValueError, match=r"model.linear_attention_chunk must be positive"):
    build_model(small_config("llama_tiny", attention_kind="linear", linear_attention_chunk=0))
