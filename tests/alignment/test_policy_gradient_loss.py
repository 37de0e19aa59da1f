"""GRPO / PPO losses: the clipped objective, the KL-to-reference term, normalisation, critic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.tasks import policy_gradient as pg


def test_clipped_objective_has_zero_gradient_outside_the_clip_range():
  eps = 0.2
  logratio = jnp.log(jnp.array([1.5, 0.5, 1.5, 0.5, 1.1, 0.9]))
  adv = jnp.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
  loss_fn = lambda lr: jnp.sum(pg.clipped_surrogate(lr, adv, eps)[0])
  grad = jax.grad(loss_fn)(logratio)
  ratio = jnp.exp(logratio)
  # Clipped: ratio above 1+eps with A > 0, below 1-eps with A < 0: no gradient.
  np.testing.assert_allclose(grad[:2], 0.0)
  # The pessimistic term is the unclipped one elsewhere: d(-rho A)/d log rho = -rho A.
  np.testing.assert_allclose(grad[2:], -ratio[2:] * adv[2:], rtol=1e-6)
  clipped = pg.clipped_surrogate(logratio, adv, eps)[1]
  assert clipped.tolist() == [True, True, False, False, False, False]


def _batch(rng, rows=4, length=6, vocab=11):
  k1, k2, k3 = jax.random.split(rng, 3)
  logits = jax.random.normal(k1, (rows, length, vocab))
  targets = jax.random.randint(k2, (rows, length), 0, vocab)
  weights = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1],
                       [0, 0, 0, 0, 0, 0]], jnp.float32)[:rows]
  logps = pg.token_logprobs(logits, targets)
  batch = {"targets": targets, "loss_weights": weights,
           "advantages": jax.random.normal(k3, (rows, length)) * weights,
           "old_logprobs": logps, "ref_logprobs": logps}
  return logits, batch


def test_kl_against_a_reference_equal_to_the_policy_is_zero():
  logits, batch = _batch(jax.random.key(0))
  logps = pg.token_logprobs(logits, batch["targets"])
  np.testing.assert_allclose(pg.k3_kl(logps, logps), 0.0, atol=1e-7)
  task = pg.PolicyGradient(name="grpo", kl_coef=0.5)
  batch = {**batch, "advantages": jnp.zeros_like(batch["advantages"])}

  def loss(logits):
    outputs = {"logits": logits, "reference": {"logits": jax.lax.stop_gradient(logits)}}
    return task.loss(outputs, batch, task.totals(batch))

  (value, sums), grad = jax.value_and_grad(loss, has_aux=True)(logits)
  assert abs(float(value)) < 1e-7 and abs(float(sums["kl_sum"])) < 1e-6
  np.testing.assert_allclose(grad, 0.0, atol=1e-7)


def test_kl_term_is_positive_and_pulls_toward_the_reference():
  logits, batch = _batch(jax.random.key(1))
  reference = logits + jax.random.normal(jax.random.key(2), logits.shape)
  task = pg.PolicyGradient(name="grpo", kl_coef=1.0)
  batch = {**batch, "advantages": jnp.zeros_like(batch["advantages"])}
  outputs = lambda lg: {"logits": lg, "reference": {"logits": reference}}
  loss = lambda lg: task.loss(outputs(lg), batch, task.totals(batch))[0]
  assert float(loss(logits)) > 0.0
  step = logits - 0.1 * jax.grad(loss)(logits)
  assert float(loss(step)) < float(loss(logits))


def test_on_policy_loss_is_minus_the_mean_advantage_over_completion_tokens():
  logits, batch = _batch(jax.random.key(3))
  weights, adv = batch["loss_weights"], batch["advantages"]
  token = pg.PolicyGradient(name="ppo", normalization="token")
  loss, sums = token.loss({"logits": logits}, batch, token.totals(batch))
  np.testing.assert_allclose(loss, -jnp.sum(adv * weights) / jnp.sum(weights), rtol=1e-5)
  assert float(sums["weight_sum"]) == float(jnp.sum(weights))
  sequence = pg.PolicyGradient(name="ppo", normalization="sequence")
  loss = sequence.loss({"logits": logits}, batch, sequence.totals(batch))[0]
  per_row = jnp.sum(adv * weights, 1) / jnp.maximum(jnp.sum(weights, 1), 1)
  np.testing.assert_allclose(loss, -jnp.sum(per_row) / 3.0, rtol=1e-5)  # 3 rows with tokens


def test_temperature_scales_the_logits_before_the_log_softmax():
  logits, batch = _batch(jax.random.key(4))
  np.testing.assert_allclose(pg.token_logprobs(logits, batch["targets"], 2.0),
                             pg.token_logprobs(logits / 2.0, batch["targets"]), rtol=1e-6)


def test_value_loss_clips_the_new_value_around_the_old():
  old, ret = jnp.array([0.0, 0.0, 0.0]), jnp.array([1.0, 1.0, -1.0])
  values = jnp.array([0.1, 0.5, 0.5])
  loss = pg.clipped_value_loss(values, old, ret, value_clip=0.2)
  # max of the unclipped and the clipped (0.2 / 0.2 / 0.2) squared errors, halved.
  np.testing.assert_allclose(loss, 0.5 * np.array([0.81, 0.64, 2.25]), rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(pg.clipped_value_loss(v, old, ret, 0.2)))(values)
  assert float(grad[1]) == 0.0  # the clipped value (0.2) has the larger error: no gradient
  np.testing.assert_allclose(grad[2], 1.5, rtol=1e-6)  # the unclipped error dominates


def test_unknown_normalisation_is_named():
  with pytest.raises(ValueError, match="loss_normalization"):
    pg.PolicyGradient(normalization="row")


@pytest.mark.hf
def test_log_probs_and_entropy_equal_trl():
  torch = pytest.importorskip("torch")
  trl_utils = pytest.importorskip("trl.trainer.utils")
  logits, batch = _batch(jax.random.key(5))
  logits_t = torch.tensor(np.asarray(logits))
  targets_t = torch.tensor(np.asarray(batch["targets"]), dtype=torch.long)
  np.testing.assert_allclose(pg.token_logprobs(logits, batch["targets"]),
                             trl_utils.selective_log_softmax(logits_t, targets_t).numpy(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pg.token_entropy(logits),
                             trl_utils.entropy_from_logits(logits_t).numpy(), rtol=1e-5)
