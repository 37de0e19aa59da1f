"""Advantages (GAE, group-relative, whitening), PPO's KL-shaped rewards and KL controller."""

import numpy as np
import pytest

from llm_jax.alignment import advantages
from llm_jax.alignment import kl


def test_gae_equals_a_hand_computed_example():
  # One row: a prompt position (masked), three completion tokens, then padding.
  rewards = np.array([[0.0, 0.1, -0.2, 1.0, 0.0]])
  values = np.array([[9.0, 0.5, 0.4, 0.8, 9.0]])
  mask = np.array([[0.0, 1.0, 1.0, 1.0, 0.0]])
  gamma, lam = 0.9, 0.8
  # By hand, backwards from the last completion token (the state after it is terminal):
  d3 = 1.0 - 0.8                   # 0.2
  d2 = -0.2 + 0.9 * 0.8 - 0.4      # 0.12
  d1 = 0.1 + 0.9 * 0.4 - 0.5       # -0.04
  a3 = d3
  a2 = d2 + 0.9 * 0.8 * a3         # 0.264
  a1 = d1 + 0.9 * 0.8 * a2         # 0.15008
  adv, ret = advantages.gae(rewards, values, mask, gamma, lam)
  np.testing.assert_allclose(adv, [[0.0, a1, a2, a3, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(ret, [[0.0, a1 + 0.5, a2 + 0.4, a3 + 0.8, 0.0]], rtol=1e-6)


def test_gae_with_lambda_one_and_no_values_is_the_reward_to_go():
  rewards = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 5.0, 0.0]])
  mask = np.array([[0, 1, 1, 1], [0, 0, 1, 0]], np.float32)
  adv, _ = advantages.gae(rewards, np.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
  np.testing.assert_allclose(adv, [[0, 6, 5, 3], [0, 0, 5, 0]])


def test_group_relative_advantages_match_the_grpo_formula():
  rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 1.0, 2.0, 0.0])
  adv = advantages.group_relative(rewards, group_size=4, scale="group")
  groups = rewards.reshape(3, 4)
  expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True)
                                                         + 1e-4)
  np.testing.assert_allclose(adv, expected.reshape(-1), rtol=1e-5)
  np.testing.assert_allclose(adv.reshape(3, 4).sum(1), 0.0, atol=1e-5)
  assert np.all(adv[4:8] == 0.0)  # a group of equal rewards teaches nothing
  unscaled = advantages.group_relative(rewards, group_size=4, scale="none")
  np.testing.assert_allclose(unscaled, (groups - groups.mean(1, keepdims=True)).reshape(-1),
                             rtol=1e-6)
  batch = advantages.group_relative(rewards, group_size=4, scale="batch")
  np.testing.assert_allclose(batch, unscaled / (rewards.std(ddof=1) + 1e-4), rtol=1e-5)


def test_group_relative_rejects_a_partial_group_and_unknown_scale():
  with pytest.raises(ValueError, match="groups of 4"):
    advantages.group_relative(np.zeros(6), 4)
  with pytest.raises(ValueError, match="scale_rewards"):
    advantages.group_relative(np.zeros(4), 4, scale="rank")


def test_whiten_normalises_the_masked_entries_only():
  x = np.array([[100.0, 1.0, 2.0], [100.0, 3.0, -100.0]])
  mask = np.array([[0, 1, 1], [0, 1, 0]])
  out = advantages.whiten(x, mask)
  kept = out[mask.astype(bool)]
  np.testing.assert_allclose([kept.mean(), kept.std()], [0.0, 1.0], atol=1e-6)
  assert np.all(out[~mask.astype(bool)] == 0.0)


def test_kl_shaped_rewards_put_the_score_on_the_last_completion_token():
  logp = np.array([[0.0, -1.0, -2.0, 0.0]])
  ref = np.array([[0.0, -1.5, -1.0, 0.0]])
  mask = np.array([[0, 1, 1, 0]])
  rewards = advantages.kl_shaped_rewards(np.array([2.0]), logp, ref, mask, kl_coef=0.1)
  np.testing.assert_allclose(rewards, [[0.0, -0.05, 0.1 + 2.0, 0.0]])


def test_adaptive_kl_controller_moves_toward_the_target_within_the_clip():
  assert kl.update_kl_coef(0.2, observed_kl=12.0, num_sequences=100, target=6.0,
                           horizon=1000) == pytest.approx(0.2 * (1 + 0.2 * 0.1))
  assert kl.update_kl_coef(0.2, observed_kl=5.4, num_sequences=100, target=6.0,
                           horizon=1000) == pytest.approx(0.2 * (1 - 0.1 * 0.1))
  assert kl.update_kl_coef(0.2, observed_kl=50.0, num_sequences=10, target=0.0,
                           horizon=1000) == 0.2
