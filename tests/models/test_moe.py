"""Mixture-of-Experts block: routing, dispatch, auxiliary losses, against per-token references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from llm_jax import decoding
from llm_jax import models
from llm_jax.models import moe
from model_testing import init_params

B, L, D, F, E = 2, 8, 16, 24, 4


def _cfg(activation="swiglu", **moe_fields):
  cfg = models.get_preset("llama_tiny")
  cfg.update(dict(d_model=D, d_ff=F, activation=activation, num_layers=2, num_heads=2,
                  num_kv_heads=2, vocab_size=64, max_len=32))
  cfg.moe.update({"num_experts": E, "top_k": 2, **moe_fields})
  return cfg


def _block(cfg, seed=0):
  """(MoE module, random params, inputs [B, L, D])."""
  block = moe.MoE(ml_collections.FrozenConfigDict(cfg))
  x_BxLxD = jax.random.normal(jax.random.key(seed), (B, L, D))
  shapes = nn.unbox(jax.eval_shape(block.init, jax.random.key(0), x_BxLxD)["params"])
  rng = np.random.default_rng(seed)
  params = {k: jnp.asarray(0.3 * rng.standard_normal(v.shape), v.dtype) for k, v in shapes.items()}
  # A wide router so that top-k choices are not near ties.
  params["router"] = params["router"] * 10.0
  return block, params, x_BxLxD


def _apply(block, params, x_BxLxD, segment_ids_BxL=None):
  apply = jax.jit(lambda p, x, s: block.apply({"params": p}, x, s, mutable=[moe.AUX_COLLECTION]))
  y, aux = apply(params, x_BxLxD, segment_ids_BxL)
  return np.asarray(y), aux[moe.AUX_COLLECTION]


def _expert_ffn(cfg, params, prefix, e, x_D):
  """One expert on one token, in NumPy."""
  p = {k[len(prefix):]: np.asarray(v[e]) for k, v in params.items() if k.startswith(prefix)}
  silu = lambda z: z / (1 + np.exp(-z))
  if cfg.activation == "swiglu":
    h = silu(x_D @ p["wi_0"]) * (x_D @ p["wi_1"])
  else:
    h = np.maximum(x_D @ p["wi"], 0.0)
  return h @ p["wo"]


def _routing(params, x_BxLxD):
  logits = np.asarray(x_BxLxD) @ np.asarray(params["router"])
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return logits, probs / probs.sum(-1, keepdims=True)


def _reference(cfg, params, x_BxLxD, kept=None):
  """Per token: sum over its top-k experts (those `kept`) of gate * expert(x), plus shared."""
  _, probs = _routing(params, x_BxLxD)
  k = 1 if cfg.moe.router == "switch" else cfg.moe.top_k
  x = np.asarray(x_BxLxD)
  y = np.zeros_like(x)
  for b in range(B):
    for t in range(L):
      chosen = np.argsort(-probs[b, t])[:k]
      gates = probs[b, t, chosen]
      if cfg.moe.normalize_top_k and cfg.moe.router == "topk":
        gates = gates / gates.sum()
      for rank, (e, g) in enumerate(zip(chosen, gates)):
        if kept is None or kept[b, t, rank]:
          y[b, t] += g * _expert_ffn(cfg, params, "", e, x[b, t])
      for s in range(cfg.moe.num_shared_experts):
        y[b, t] += _expert_ffn(cfg, params, "shared_", s, x[b, t])
  return y


@pytest.mark.parametrize("activation, router, shared", [
    ("swiglu", "topk", 0), ("relu", "switch", 0), ("swiglu", "topk", 1)])
def test_dropless_equals_dense_per_token_reference(activation, router, shared):
  cfg = _cfg(activation, router=router, num_shared_experts=shared)
  block, params, x = _block(cfg)
  y, _ = _apply(block, params, x)
  np.testing.assert_allclose(y, _reference(cfg, params, x), rtol=1e-4, atol=1e-5)


def _kept_by_capacity(probs, k, slots):
  """[B, L, k] whether each token copy gets a slot: first choices before second, in order."""
  kept = np.zeros((B, L, k), bool)
  for b in range(B):
    used = np.zeros(E, int)
    for rank in range(k):
      for t in range(L):
        e = np.argsort(-probs[b, t])[rank]
        if used[e] < slots:
          kept[b, t, rank] = True
          used[e] += 1
  return kept


@pytest.mark.parametrize("router, top_k", [("switch", 1), ("topk", 2)])
def test_capacity_drops_copies_over_capacity_and_dropped_tokens_get_zero(router, top_k):
  cfg = _cfg("relu", router=router, top_k=top_k, capacity_factor=0.5)
  slots = moe.capacity(cfg.moe, L)
  assert slots == int(np.ceil(0.5 * L * top_k / E))
  block, params, x = _block(cfg)
  y, _ = _apply(block, params, x)
  _, probs = _routing(params, x)
  kept = _kept_by_capacity(probs, top_k, slots)
  assert not kept.all()  # the setting really drops copies
  np.testing.assert_allclose(y, _reference(cfg, params, x, kept), rtol=1e-4, atol=1e-5)
  dropped = ~kept.any(-1)
  assert dropped.any()
  np.testing.assert_array_equal(y[dropped], 0.0)  # only the residual carries them


def test_padding_tokens_take_no_capacity():
  cfg = _cfg("relu", router="switch", capacity_factor=0.5)
  block, params, x = _block(cfg)
  segments = np.ones((B, L), np.int32)
  segments[:, :3] = 0  # padding in front would take the first slots if it were dispatched
  y, _ = _apply(block, params, x, jnp.asarray(segments))
  _, probs = _routing(params, x)
  kept = np.zeros((B, L, 1), bool)
  for b in range(B):
    used = np.zeros(E, int)
    for t in range(3, L):
      e = np.argmax(probs[b, t])
      if used[e] < moe.capacity(cfg.moe, L):
        kept[b, t, 0], used[e] = True, used[e] + 1
  np.testing.assert_allclose(y, _reference(cfg, params, x, kept), rtol=1e-4, atol=1e-5)


def test_expert_choice_gives_each_expert_its_best_tokens():
  cfg = _cfg("relu", router="expert_choice", capacity_factor=1.0)
  block, params, x = _block(cfg)
  y, _ = _apply(block, params, x)
  _, probs = _routing(params, x)
  slots = moe.capacity(cfg.moe, L)
  expected = np.zeros_like(y)
  for b in range(B):
    for e in range(E):
      for t in np.argsort(-probs[b, :, e])[:slots]:
        expected[b, t] += probs[b, t, e] * _expert_ffn(cfg, params, "", e, np.asarray(x[b, t]))
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_load_balance_loss_is_the_switch_formula_and_z_loss_is_logsumexp_squared():
  cfg = _cfg("relu", top_k=2)
  block, params, x = _block(cfg)
  _, aux = _apply(block, params, x)
  logits, probs = _routing(params, x)
  chosen = np.argsort(-probs, axis=-1)[..., :2].reshape(-1, 2)
  f = np.bincount(chosen.ravel(), minlength=E) / chosen.size
  p = probs.reshape(-1, E).mean(0)
  np.testing.assert_allclose(aux["load_balance_loss"][0], E * np.sum(f * p), rtol=1e-5)
  np.testing.assert_allclose(aux["expert_load"][0], f, rtol=1e-6)
  z = np.log(np.exp(logits).sum(-1))
  np.testing.assert_allclose(aux["z_loss"][0], np.mean(z ** 2), rtol=1e-5)


def test_load_balance_loss_is_one_for_uniform_routing_and_e_when_collapsed():
  probs_TxE = jnp.full((8, E), 1.0 / E)
  experts_TxK = jnp.arange(8)[:, None] % E
  valid_T = jnp.ones(8)
  balance, load_E = moe.load_balance_loss(probs_TxE, experts_TxK, valid_T)
  np.testing.assert_allclose(balance, 1.0, rtol=1e-6)
  np.testing.assert_allclose(load_E, 1.0 / E, rtol=1e-6)
  collapsed, _ = moe.load_balance_loss(jax.nn.one_hot(jnp.zeros(8, int), E),
                                       jnp.zeros((8, 1), int), valid_T)
  np.testing.assert_allclose(collapsed, E, rtol=1e-6)


def test_top_k_gates_sum_to_one_after_renormalisation_only():
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (16, E)) * 3)
  gates, experts = moe.route_top_k(probs, 2, normalize=True)
  np.testing.assert_allclose(jnp.sum(gates, -1), 1.0, rtol=1e-6)
  raw, _ = moe.route_top_k(probs, 2, normalize=False)
  np.testing.assert_allclose(raw, jnp.take_along_axis(probs, experts, -1), rtol=1e-6)
  assert float(jnp.max(jnp.sum(raw, -1))) < 1.0


@pytest.mark.parametrize("fields, words", [
    (dict(top_k=5), ["model.moe.top_k=5", "num_experts=4"]),
    (dict(router="hash"), ["model.moe.router='hash'"]),
    (dict(every=2, offset=2), ["model.moe.offset=2"]),
    (dict(router="expert_choice"), ["model.moe.capacity_factor"]),
])
def test_bad_moe_config_names_the_field(fields, words):
  cfg = _cfg(**fields)
  with pytest.raises(ValueError) as error:
    models.build_model(cfg)
  for word in words:
    assert word in str(error.value)


def test_every_nth_layer_is_moe_and_aux_is_averaged_over_them():
  cfg = _cfg(every=2, offset=1)
  cfg.num_layers = 4
  model, params = init_params(cfg)
  tokens = jnp.arange(B * L).reshape(B, L) % cfg.vocab_size
  layers = params["decoder"]
  assert [("moe" in layers[f"layers_{i}"]) for i in range(4)] == [False, True, False, True]
  assert [("mlp" in layers[f"layers_{i}"]) for i in range(4)] == [True, False, True, False]
  out, aux = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=[moe.AUX_COLLECTION]))(
      params, tokens)
  sown = aux[moe.AUX_COLLECTION]["decoder"]
  per_layer = [float(sown[f"layers_{i}"]["moe"]["load_balance_loss"][0]) for i in (1, 3)]
  totals = moe.aux_outputs(aux, cfg.moe)
  np.testing.assert_allclose(totals["moe_load_balance_loss"], np.mean(per_layer), rtol=1e-6)
  np.testing.assert_allclose(
      totals["moe_aux_loss"], cfg.moe.load_balance_coef * totals["moe_load_balance_loss"]
      + cfg.moe.z_loss_coef * totals["moe_z_loss"], rtol=1e-6)
  np.testing.assert_allclose(sum(totals[f"moe_expert_load_{e}"] for e in range(E)), 1.0,
                             rtol=1e-6)
  assert out["logits"].shape == (B, L, cfg.vocab_size)


def test_generate_with_moe_layers_equals_greedy_full_forward():
  cfg = _cfg(num_shared_experts=1)
  cfg.num_layers = 1
  model, params = init_params(cfg)
  prompt = [5, 9, 2, 11]
  new = 4
  generated = decoding.generate(model, params, [prompt], max_new_tokens=new).tokens[0]
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x)["logits"])
  tokens = np.zeros((1, len(prompt) + new), np.int32)
  tokens[0, :len(prompt)] = prompt
  for t in range(len(prompt), len(prompt) + new):  # causal: later zeros do not change t - 1
    tokens[0, t] = int(jnp.argmax(forward(params, tokens)[0, t - 1]))
  assert list(np.asarray(generated)) == list(tokens[0, len(prompt):])
