"""Cached decoding against the full forward pass, shared by the attention-kind tests."""

import jax
import jax.numpy as jnp
import numpy as np

from model_testing import init_params, jit_apply, random_tokens


def assert_cached_decoding_matches_full_forward(cfg, prompt_length=5, total=12, atol=1e-5):
  """Row 0 left-padded by two; prefill `prompt_length` columns, then one token at a time."""
  model, params = init_params(cfg)
  apply = jit_apply(model)
  tokens = random_tokens(0, (2, total))
  seg = jnp.array([[0, 0] + [1] * (total - 2), [1] * total])
  pos = jnp.array([[0, 0] + list(range(total - 2)), list(range(total))])
  full = apply({"params": params}, tokens, input_segment_ids=seg, input_positions=pos)["logits"]
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, total),
                                                                             jnp.int32),
                                             decode=True))["cache"]
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  cols = [slice(0, prompt_length)] + [slice(t, t + 1) for t in range(prompt_length, total)]
  for col in cols:
    out, mutated = apply({"params": params, "cache": cache}, tokens[:, col],
                         input_segment_ids=seg[:, col], input_positions=pos[:, col],
                         decode=True, mutable=("cache",))
    cache = mutated["cache"]
    real = np.asarray(seg[:, col] != 0)
    np.testing.assert_allclose(np.asarray(out["logits"])[real], np.asarray(full[:, col])[real],
                               atol=atol)
  return cache


def packed_equals_separate(cfg, atol=1e-5):
  """Logits of two sequences packed in one row equal each sequence run alone."""
  model, params = init_params(cfg)
  apply = jit_apply(model)
  a, b = random_tokens(1, (1, 7)), random_tokens(2, (1, 9))
  packed = jnp.concatenate([a, b], axis=1)
  seg = jnp.array([[1] * 7 + [2] * 9])
  pos = jnp.array([list(range(7)) + list(range(9))])
  logits = apply({"params": params}, packed, input_segment_ids=seg,
                 input_positions=pos)["logits"]
  np.testing.assert_allclose(logits[:, :7], apply({"params": params}, a)["logits"], atol=atol)
  np.testing.assert_allclose(logits[:, 7:], apply({"params": params}, b)["logits"], atol=atol)
