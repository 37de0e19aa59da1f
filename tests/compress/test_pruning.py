"""Pruning: masks kept through training, 2:4 groups, the cubic schedule, structured export."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from llm_jax import models
from llm_jax.compress import pruning
from llm_jax.compress import ptq


def _params(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {"decoder": {"layers_0": {
      "mlp": {"wi": {"kernel": jax.random.normal(k[0], (16, 32))},
              "wo": {"kernel": jax.random.normal(k[1], (32, 16))}},
      "mlp_norm": {"scale": jnp.ones(16)}}},
      "token_embed": {"embedding": jax.random.normal(k[2], (8, 16))}}


def _section(**kw):
  section = ml_collections.ConfigDict(dict(sparsity=0.5, pattern="unstructured", scope="layer",
                                           targets="mlp/", begin_step=0, end_step=0,
                                           update_every=1))
  section.update(kw)
  return section


def _train(params, tx, steps=4):
  loss = lambda p: sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruned_weights_stay_zero_through_training(scope):
  tx = optax.chain(optax.adam(0.1), pruning.masked_updates(_section(scope=scope)))
  params = _train(_params(), tx)
  kernels = ptq.dense_kernels(params, "mlp/")
  zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels.values())
  assert zeros == 16 * 32  # half of the 2 * 512 weights, every step
  if scope == "layer":
    assert all(np.mean(np.asarray(k) == 0) == 0.5 for k in kernels.values())
  trained = _train(params, tx, 2)  # the gradient pulls every weight towards 1
  assert np.all(np.asarray(trained["token_embed"]["embedding"]) != 0)


def test_two_of_four_masks_keep_exactly_two_in_every_group():
  keep = pruning.masks(_params(), 0.0, pattern="2:4", targets="mlp/")
  for layer, mask in keep.items():
    groups = np.asarray(mask).T.reshape(-1, 4)  # groups of 4 contracted weights per output
    assert np.all(groups.sum(axis=1) == 2), layer


def test_gradual_schedule_is_cubic_and_reaches_the_final_sparsity():
  values = [float(pruning.cubic_sparsity(t, 0.8, 10, 20)) for t in (0, 10, 15, 20, 30)]
  assert values[:2] == [0.0, 0.0] and values[3] == values[4] == pytest.approx(0.8)
  assert values[2] == pytest.approx(0.8 * (1 - 0.5 ** 3))


def test_a_sparsity_outside_zero_one_is_a_clear_error():
  for bad in (1.0, -0.1):
    with pytest.raises(ValueError, match=r"pruning.sparsity=.*\[0, 1\)"):
      pruning.masked_updates(_section(sparsity=bad))


def _tiny_model_cfg():
  cfg = models.get_preset("gpt_tiny")
  cfg.update(dict(d_model=32, num_layers=2, num_heads=4, d_ff=64, max_len=16, vocab_size=64))
  return cfg


@pytest.mark.parametrize("pattern", ["neurons", "heads"])
def test_a_structurally_pruned_model_equals_the_masked_model(pattern):
  cfg = _tiny_model_cfg()
  model = models.build_model(cfg)
  tokens = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  params = jax.tree.map(np.asarray, params)
  small_cfg, small = pruning.prune_structured(cfg, params, 0.5, pattern)
  assert (small_cfg.d_ff, small_cfg.num_heads) == ((32, 4) if pattern == "neurons" else (64, 2))
  masked = jax.tree.map(np.array, params)
  for i in range(cfg.num_layers):
    layer, kept = masked["decoder"][f"layers_{i}"], small["decoder"][f"layers_{i}"]
    if pattern == "neurons":
      removed = ~np.isin(np.arange(64), [np.flatnonzero(np.all(
          params["decoder"][f"layers_{i}"]["mlp"]["wo"]["kernel"] == row, axis=1))[0]
          for row in kept["mlp"]["wo"]["kernel"]])
      layer["mlp"]["wo"]["kernel"][removed] = 0
    else:
      importance = pruning.head_importance(params["decoder"][f"layers_{i}"]["self_attention"])
      removed = np.argsort(-importance)[2:]
      layer["self_attention"]["out"]["kernel"][removed] = 0
  want = model.apply({"params": masked}, tokens)["logits"]
  got = models.build_model(small_cfg).apply({"params": small}, tokens)["logits"]
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert ptq.tree_bytes(small) < ptq.tree_bytes(params)


@pytest.mark.hf
def test_a_neuron_pruned_gpt2_exports_to_transformers_with_the_same_logits(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from llm_jax import convert  # pylint: disable=g-import-not-at-top
  cfg = _tiny_model_cfg()
  model = models.build_model(cfg)
  tokens = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
  params = jax.tree.map(np.asarray, nn.unbox(model.init(jax.random.key(2), tokens)["params"]))
  small_cfg, small = pruning.prune_structured(cfg, params, 0.25, "neurons")
  convert.to_hf(small_cfg, small, str(tmp_path / "hf"))
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  assert torch_model.config.n_inner == 48
  with torch.no_grad():
    theirs = torch_model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  ours = models.build_model(small_cfg).apply({"params": small}, tokens)["logits"]
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
