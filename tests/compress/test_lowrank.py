"""Low-rank factorisation: full rank is the layer itself; energy picks the rank; the model
written as LoRA factors computes the factorised layers."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from llm_jax import models
from llm_jax.compress import lowrank


def test_full_rank_equals_the_original_layer_and_truncation_is_the_svd_optimum():
  w = np.asarray(jax.random.normal(jax.random.key(0), (16, 2, 8)))
  a, b = lowrank.factorise(w, "decoder/layers_0/self_attention/query", rank=16)
  np.testing.assert_allclose(np.tensordot(a, b, axes=1), w, atol=1e-5)
  a4, b4 = lowrank.factorise(w, "decoder/layers_0/self_attention/query", rank=4)
  s = np.linalg.svd(w.reshape(16, 16), compute_uv=False)
  error = np.sum(np.square(np.tensordot(a4, b4, axes=1) - w))
  np.testing.assert_allclose(error, np.sum(np.square(s[4:])), rtol=1e-4)


def test_energy_picks_the_smallest_rank_that_keeps_it():
  s = np.array([3.0, 2.0, 1.0, 0.5])
  assert lowrank.rank_for_energy(s, 9 / 14.25) == 1
  assert lowrank.rank_for_energy(s, 0.95) == 3
  assert lowrank.rank_for_energy(s, 1.0) == 4


def test_the_factorised_model_at_full_rank_has_the_original_logits():
  cfg = models.get_preset("gpt_tiny")
  cfg.update(dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, max_len=16, vocab_size=32))
  tokens = np.arange(1, 9, dtype=np.int32).reshape(1, 8)
  params = jax.tree.map(np.asarray, nn.unbox(
      models.build_model(cfg).apply if False else models.build_model(cfg).init(
          jax.random.key(0), tokens)["params"]))
  full = ml_collections.ConfigDict({"model": cfg.to_dict()})
  out, new_cfg, count = lowrank.factorise_model(full, params, rank=16, targets="mlp/")
  assert new_cfg.model.peft.lora_rank == 16 and count == 2 * (16 * 16 + 16 * 32)
  want = models.build_model(cfg).apply({"params": params}, tokens)["logits"]
  got = models.build_model(new_cfg.model).apply({"params": out}, tokens)["logits"]
  np.testing.assert_allclose(got, want, atol=1e-4)
