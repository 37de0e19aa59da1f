"""Every attention implementation equals the 'xla' einsum reference (outputs and gradients)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.models import attention, attention_ops, build_model
from model_testing import init_params, small_config

# Row 0 packs two sequences and padding; row 1 is one sequence. Segment 2 starts mid-block.
SEGMENTS = np.array([[1] * 7 + [2] * 6 + [0] * 3, [1] * 16], np.int32)


def packed_positions(segment_ids):
  positions = np.zeros_like(segment_ids)
  for row in range(segment_ids.shape[0]):
    for i in range(1, segment_ids.shape[1]):
      same = segment_ids[row, i] == segment_ids[row, i - 1]
      positions[row, i] = positions[row, i - 1] + 1 if same else 0
  return positions


POSITIONS = packed_positions(SEGMENTS)


def qkv(seed=0, heads=4, kv_heads=2, head_dim=8, segments=SEGMENTS):
  rng = np.random.default_rng(seed)
  b, length = segments.shape
  q = rng.standard_normal((b, length, heads, head_dim)).astype(np.float32)
  k = rng.standard_normal((b, length, kv_heads, head_dim)).astype(np.float32)
  v = rng.standard_normal((b, length, kv_heads, head_dim)).astype(np.float32)
  weights = rng.standard_normal((b, length, heads, head_dim)).astype(np.float32)
  return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(weights)


def dense_mask(mask_type, window=0, block_sparse=None, prefix=None):
  pos, seg = jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS)
  return attention.attention_mask(pos, seg, pos, seg, mask_type, prefix, prefix,
                                  sliding_window=window, block_sparse=block_sparse)


def value_and_grads(fn):
  """Jitted: fn's output on real (segment != 0) queries and the gradients of a weighted sum."""
  real = jnp.asarray(SEGMENTS != 0)[:, :, None, None]

  def run(q, k, v, weights):
    out, vjp = jax.vjp(lambda q, k, v: jnp.where(real, fn(q, k, v), 0.0), q, k, v)
    return out, vjp(weights)

  return jax.jit(run)


def assert_same(fn, reference, seed=0, atol=2e-5, **shapes):
  q, k, v, weights = qkv(seed, **shapes)
  out, grads = value_and_grads(fn)(q, k, v, weights)
  ref_out, ref_grads = value_and_grads(reference)(q, k, v, weights)
  np.testing.assert_allclose(out, ref_out, atol=atol)
  for grad, ref_grad in zip(grads, ref_grads):
    np.testing.assert_allclose(grad, ref_grad, atol=atol)


PREFIX = jnp.asarray(((POSITIONS < 3) & (SEGMENTS != 0)).astype(np.int32))


SLOW = pytest.mark.slow


@pytest.mark.parametrize("mask_type", ["causal", pytest.param("prefix", marks=SLOW),
                                       pytest.param("bidirectional", marks=SLOW)])
def test_dot_product_attention_equals_xla(mask_type):
  mask = dense_mask(mask_type, prefix=PREFIX if mask_type == "prefix" else None)
  bias = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 16, 16)), jnp.float32)
  assert_same(lambda q, k, v: attention_ops.dot_product_attention(q, k, v, mask, bias),
              lambda q, k, v: attention_ops.xla_attention(q, k, v, mask, bias))


@pytest.mark.parametrize("causal,window", [(True, 0), pytest.param(False, 5, marks=SLOW)])
def test_splash_in_interpret_mode_equals_xla(causal, window):
  mask = dense_mask("causal" if causal else "bidirectional", window=window)
  seg = jnp.asarray(SEGMENTS)
  assert_same(lambda q, k, v: attention_ops.splash_attention(q, k, v, seg, causal=causal,
                                                             window=window, interpret=True),
              lambda q, k, v: attention_ops.xla_attention(q, k, v, mask), kv_heads=1)


@pytest.mark.parametrize("causal,window", [(True, 4), pytest.param(True, 7, marks=SLOW),
                                           pytest.param(False, 3, marks=SLOW)])
def test_blocked_sliding_window_equals_masked_xla(causal, window):
  mask = dense_mask("causal" if causal else "bidirectional", window=window)
  pos, seg = jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS)
  assert_same(lambda q, k, v: attention_ops.sliding_window_attention(q, k, v, pos, seg, window,
                                                                     causal=causal),
              lambda q, k, v: attention_ops.xla_attention(q, k, v, mask))


@pytest.mark.parametrize("block_size,num_global", [(4, 2), pytest.param(3, 0, marks=SLOW),
                                                   pytest.param(2, 5, marks=SLOW)])
def test_blocked_block_sparse_equals_masked_xla(block_size, num_global):
  mask = dense_mask("causal", block_sparse=(block_size, num_global))
  pos, seg = jnp.asarray(POSITIONS), jnp.asarray(SEGMENTS)
  assert_same(lambda q, k, v: attention_ops.block_sparse_attention(q, k, v, pos, seg,
                                                                   block_size, num_global),
              lambda q, k, v: attention_ops.xla_attention(q, k, v, mask))


def test_block_sparse_mask_drops_far_keys_and_keeps_global_ones():
  mask = np.asarray(dense_mask("causal", block_sparse=(2, 1)))[1, 0]  # row 1: positions 0..15
  assert mask[9, 0] and mask[9, 6] and mask[9, 9] and not mask[9, 5] and not mask[9, 1]


def test_auto_falls_back_to_xla_on_cpu_with_one_log_line(caplog):
  attention_ops._logged_reasons.clear()
  with caplog.at_level(logging.INFO):
    for _ in range(2):
      impl, _ = attention_ops.choose_impl("auto", platform="cpu", dtype=jnp.float32, head_dim=8,
                                          dropout=False, splash_blocker=None)
      assert impl == "xla"
  assert [r.message for r in caplog.records].count(
      "model.attention_impl='auto' uses 'xla': no fused attention kernel on 'cpu'") == 1
  impl, implementation = attention_ops.choose_impl(
      "auto", platform="gpu", dtype=jnp.bfloat16, head_dim=64, dropout=False, splash_blocker=None)
  assert (impl, implementation) == ("dot_product_attention", "cudnn")
  assert attention_ops.choose_impl("auto", platform="tpu", dtype=jnp.float32, head_dim=8,
                                   dropout=False, splash_blocker=None)[0] == "splash"


def test_unsupported_impls_are_errors_naming_the_field():
  with pytest.raises(ValueError, match=r"model.attention_impl='splash'.*TPU"):
    build_model(small_config("llama_tiny", attention_impl="splash"))
  with pytest.raises(ValueError, match=r"model.attention_impl='flash'"):
    build_model(small_config("llama_tiny", attention_impl="flash"))
  with pytest.raises(ValueError, match=r"model.attention_impl='splash'.*prefix"):
    attention_ops.choose_impl("splash", platform="tpu", dtype=jnp.float32, head_dim=8,
                              dropout=False, splash_blocker="the prefix mask is not static")
  with pytest.raises(ValueError, match=r"model.attention_impl='dot_product_attention'.*dropout"):
    attention_ops.choose_impl("dot_product_attention", platform="cpu", dtype=jnp.float32,
                              head_dim=8, dropout=True, splash_blocker=None)


def _model_logits_and_grads(cfg, params, tokens):
  model = build_model(cfg)
  seg, pos = jnp.asarray(SEGMENTS), jnp.asarray(POSITIONS)

  weights = jnp.asarray(np.random.default_rng(2).standard_normal(SEGMENTS.shape + (61,)),
                        jnp.float32)

  def loss(params):
    logits = model.apply({"params": params}, tokens, input_segment_ids=seg,
                         input_positions=pos)["logits"]
    return jnp.sum(jnp.where(seg[..., None] != 0, logits * weights, 0.0)), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return np.where(SEGMENTS[..., None] != 0, logits, 0.0), grads


@pytest.mark.parametrize("impl,extra", [
    ("dot_product_attention", {}),
    pytest.param("dot_product_attention", {"attention": "prefix"}, marks=pytest.mark.slow),
    pytest.param("splash", {"attention_interpret": True, "num_layers": 1},
                 marks=pytest.mark.slow),
])
def test_model_with_each_impl_equals_xla(impl, extra):
  cfg = small_config("llama_tiny", **extra)
  _, params = init_params(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 61, SEGMENTS.shape), jnp.int32)
  ref_logits, ref_grads = _model_logits_and_grads(small_config("llama_tiny", attention_impl="xla",
                                                               **extra), params, tokens)
  logits, grads = _model_logits_and_grads(small_config("llama_tiny", attention_impl=impl,
                                                       **extra), params, tokens)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads,
               ref_grads)
