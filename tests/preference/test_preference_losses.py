"""The preference losses equal their papers' formulas on fixed log-probabilities, and trl's
loss functions where trl exposes them (ORPO's odds-ratio loss, CPO's SimPO loss)."""

import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.tasks import preference

RNG = np.random.default_rng(0)
POLICY_C, POLICY_R = -RNG.uniform(1, 20, 16), -RNG.uniform(1, 20, 16)
REF_C, REF_R = -RNG.uniform(1, 20, 16), -RNG.uniform(1, 20, 16)
LOG_SIGMOID = lambda x: -np.log1p(np.exp(-x))


def test_dpo_is_the_papers_formula_with_label_smoothing():
  beta, eps = 0.3, 0.1
  d = (POLICY_C - REF_C) - (POLICY_R - REF_R)
  expected = -(1 - eps) * LOG_SIGMOID(beta * d) - eps * LOG_SIGMOID(-beta * d)
  got = preference.dpo_loss(POLICY_C - REF_C, POLICY_R - REF_R, beta, eps)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_dpo_of_a_policy_equal_to_its_reference_is_log_2():
  got = preference.dpo_loss(jnp.zeros(4), jnp.zeros(4), beta=0.1)
  np.testing.assert_allclose(got, math.log(2), rtol=1e-6)


def test_ipo_is_the_squared_distance_to_one_over_two_beta():
  beta = 0.5
  expected = ((POLICY_C - REF_C) - (POLICY_R - REF_R) - 1 / (2 * beta)) ** 2
  np.testing.assert_allclose(preference.ipo_loss(POLICY_C - REF_C, POLICY_R - REF_R, beta),
                             expected, rtol=1e-5)


def test_simpo_and_orpo_and_bradley_terry_formulas():
  beta, gamma = 2.0, 0.5
  c, r = POLICY_C / 10, POLICY_R / 10  # mean log-probs
  np.testing.assert_allclose(preference.simpo_loss(c, r, beta, gamma),
                             -LOG_SIGMOID(beta * (c - r) - gamma), rtol=1e-5)
  odds = lambda x: np.log(np.exp(x) / (1 - np.exp(x)))
  np.testing.assert_allclose(preference.orpo_odds_loss(c, r),
                             -LOG_SIGMOID(odds(c) - odds(r)), rtol=1e-4)
  np.testing.assert_allclose(preference.bradley_terry_loss(POLICY_C, POLICY_R, 0.5),
                             -LOG_SIGMOID(POLICY_C - POLICY_R - 0.5), rtol=1e-5)


def _pair_batch(chosen_weights, rejected_weights, length=6):
  """Rows: chosen at even, rejected at odd; targets all 0 so a logit table sets log-probs."""
  weights = np.zeros((2 * len(chosen_weights), length), np.float32)
  for i, (c, r) in enumerate(zip(chosen_weights, rejected_weights)):
    weights[2 * i, :c] = 1
    weights[2 * i + 1, :r] = 1
  return {"targets": np.zeros(weights.shape, np.int32), "loss_weights": weights}


def test_dpo_task_reads_pairs_from_consecutive_rows_and_counts_preference_accuracy():
  batch = _pair_batch([3, 2], [2, 4])
  logits = RNG.normal(size=batch["targets"].shape + (5,)).astype(np.float32)
  ref_logits = RNG.normal(size=logits.shape).astype(np.float32)
  task = preference.DirectPreference(name="dpo", beta=0.2)
  outputs = {"logits": logits, "reference": {"logits": ref_logits}}
  loss, sums = task.loss(outputs, batch, task.totals(batch))
  logp = lambda lg: np.sum(np.log(np.exp(lg[..., 0]) / np.exp(lg).sum(-1)) * batch["loss_weights"], -1)
  pi, ref = logp(logits), logp(ref_logits)
  margin = (pi[0::2] - ref[0::2]) - (pi[1::2] - ref[1::2])
  np.testing.assert_allclose(loss, np.mean(-LOG_SIGMOID(0.2 * margin)), rtol=1e-5)
  assert float(sums["correct_sum"]) == float(np.sum(margin > 0))
  assert float(sums["weight_sum"]) == 2.0
  precomputed = {**batch, "reference_logps": ref.astype(np.float32)}
  loss_pre, _ = task.loss({"logits": logits}, precomputed, task.totals(precomputed))
  np.testing.assert_allclose(loss_pre, loss, rtol=1e-6)


def test_padding_pairs_do_not_count_and_odd_batches_are_refused():
  batch = _pair_batch([3, 0], [2, 0])
  task = preference.RewardModel()
  rewards = np.array([[1.0], [0.0], [5.0], [9.0]], np.float32)
  loss, sums = task.loss({"class_logits": rewards}, batch, task.totals(batch))
  np.testing.assert_allclose(loss, -LOG_SIGMOID(1.0), rtol=1e-6)
  assert float(sums["weight_sum"]) == 1.0 and float(sums["correct_sum"]) == 1.0
  with pytest.raises(ValueError, match="even number of rows"):
    preference.pairs(jnp.zeros(3))


@pytest.mark.hf
def test_orpo_and_simpo_equal_trl():
  torch = pytest.importorskip("torch")
  from trl.experimental.cpo import cpo_trainer  # pylint: disable=g-import-not-at-top
  from trl.experimental.orpo import orpo_trainer  # pylint: disable=g-import-not-at-top
  c, r = POLICY_C / 10, POLICY_R / 10
  beta = 0.25
  fake = types.SimpleNamespace(beta=beta, accelerator=types.SimpleNamespace(device="cpu"))
  trl_ratio = orpo_trainer.ORPOTrainer.odds_ratio_loss(fake, torch.tensor(c), torch.tensor(r))[0]
  # trl returns beta * log s(log odds), which its loss subtracts from the NLL.
  np.testing.assert_allclose(-trl_ratio.numpy() / beta, preference.orpo_odds_loss(c, r), rtol=1e-5)
  fake = types.SimpleNamespace(beta=2.0, simpo_gamma=0.5, label_smoothing=0.1, alpha=0.0,
                               loss_type="simpo", accelerator=types.SimpleNamespace(device="cpu"))
  trl_simpo = cpo_trainer.CPOTrainer.cpo_loss(fake, torch.tensor(c), torch.tensor(r))[0]
  np.testing.assert_allclose(trl_simpo.numpy(), preference.simpo_loss(c, r, 2.0, 0.5, 0.1),
                             rtol=1e-5)
