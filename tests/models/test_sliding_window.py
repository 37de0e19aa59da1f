"""Sliding-window attention (model.sliding_window): training, packing, ring-buffer decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import unfreeze

from llm_jax.models import attention, build_model
from decoding_testing import assert_cached_decoding_matches_full_forward, packed_equals_separate
from model_testing import init_params, jit_apply, random_tokens, small_config


def test_window_at_least_the_length_equals_full_attention():
  model, params = init_params(small_config("llama_tiny"))
  windowed = build_model(small_config("llama_tiny", sliding_window=16))
  x = random_tokens(0, (2, 16))
  np.testing.assert_allclose(jit_apply(windowed)({"params": params}, x)["logits"],
                             jit_apply(model)({"params": params}, x)["logits"], atol=1e-6)


# 16: the blocked kernel; 3: a window longer than the input, the dense mask.
@pytest.mark.parametrize("length", [16, pytest.param(3, marks=pytest.mark.slow)])
def test_a_token_outside_the_window_has_no_influence(length):
  window = 4
  cfg = small_config("llama_tiny", sliding_window=window)
  layer = attention.Attention(cfg, mask_type="causal", use_rope=True, sliding_window=window)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, length, 32)), jnp.float32)
  pos = jnp.arange(length)[None]
  seg = jnp.ones((1, length), jnp.int32)
  variables = layer.init(jax.random.PRNGKey(0), x, pos, seg)
  weights_D = jnp.asarray(np.random.default_rng(1).standard_normal(32), jnp.float32)

  @jax.jit
  def influence(x):  # [Q, K]: |d (out_q . w) / d x_k| summed over features
    _, vjp = jax.vjp(lambda x: layer.apply(variables, x, pos, seg), x)
    cotangents_QxBxQxD = jnp.eye(length)[:, None, :, None] * weights_D
    grads_QxBxKxD = jax.vmap(lambda c: vjp(c)[0])(cotangents_QxBxQxD)
    return jnp.abs(grads_QxBxKxD[:, 0]).sum(-1)

  influence_QxK = np.asarray(influence(x))
  q, k = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
  inside = (k <= q) & (q - k < window)
  assert np.all(influence_QxK[~inside] == 0)
  assert np.all(influence_QxK[inside] > 0)


def test_packed_rows_equal_separate_sequences():
  packed_equals_separate(small_config("llama_tiny", sliding_window=3))


@pytest.mark.parametrize("overrides", [
    {"sliding_window_layers": "every:2"},  # layer 0 a ring of 3, layer 1 the full cache
    pytest.param({"scan_layers": True}, marks=pytest.mark.slow),
])
def test_cached_decoding_with_a_ring_buffer_matches_full_forward(overrides):
  cfg = small_config("llama_tiny", sliding_window=3, **overrides)
  cache = assert_cached_decoding_matches_full_forward(cfg)
  cache = unfreeze(cache)["decoder"]
  if cfg.scan_layers:
    assert cache["layers"]["self_attention"]["cached_key"].shape == (2, 2, 3, 2, 8)
  else:
    assert cache["layers_0"]["self_attention"]["cached_key"].shape == (2, 3, 2, 8)
    assert cache["layers_1"]["self_attention"]["cached_key"].shape == (2, 12, 2, 8)


def test_window_layers_spec():
  assert attention.parse_window_layers("all", 3) == (0, 1, 2)
  assert attention.parse_window_layers("every:2", 5) == (0, 2, 4)
  assert attention.parse_window_layers("1, 3", 5) == (1, 3)
  cfg = small_config("llama_tiny", sliding_window=5, sliding_window_layers="1")
  assert [attention.layer_window(cfg, i, 2) for i in range(2)] == [0, 5]


@pytest.mark.parametrize("overrides,match", [
    ({"sliding_window": -1}, r"model.sliding_window must be >= 0"),
    ({"sliding_window": 4, "sliding_window_layers": "7"}, r"model.sliding_window_layers='7'"),
    ({"sliding_window": 4, "sliding_window_layers": "every:0"}, r"model.sliding_window_layers"),
    ({"sliding_window": 4, "sliding_window_layers": "every:2", "scan_layers": True},
     r"model.scan_layers=False"),
    ({"sliding_window": 4, "attention_kind": "linear"}, r"model.sliding_window=4 applies to"),
    ({"attention_kind": "block_sparse", "block_sparse_block_size": 0},
     r"model.block_sparse_block_size must be positive"),
    ({"attention_kind": "sparse"}, r"model.attention_kind='sparse' is not one of"),
])
def test_bad_attention_fields_are_errors_naming_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    build_model(small_config("llama_tiny", **overrides))
