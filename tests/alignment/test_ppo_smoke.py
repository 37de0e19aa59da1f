"""A PPO iteration end to end: critic, GAE, adaptive KL, checkpoints of policy and critic."""

import numpy as np
import pytest

from llm_jax.alignment import rl_loop
from llm_jax.evaluation import load
from llm_jax.training import metrics as metrics_lib

from tests.alignment import rl_testing


@pytest.mark.slow  # two models, two compiled steps: about a minute on 2 CPUs
def test_ppo_run_trains_policy_and_critic(tmp_path):
  cfg = rl_testing.tiny_rl_config("ppo", steps=1, epochs=2, kl_target=0.5,
                                  reward="python:tests.alignment.rl_testing:length_reward")
  workdir = str(tmp_path / "ppo")
  result = rl_loop.train(cfg, workdir)
  row = [r for r in metrics_lib.read_rows(workdir) if "reward" in r][-1]
  for key in ("value_loss", "value_error", "kl_coef", "clip_fraction", "entropy"):
    assert np.isfinite(row[key]), key
  assert row["kl_coef"] == cfg.alignment.kl_coef  # the coefficient this iteration used
  assert row["value_loss"] > 0
  assert load.checkpoint_steps(workdir) == [1]
  assert load.checkpoint_steps(str(tmp_path / "ppo" / rl_loop.CRITIC_DIR)) == [1]
  assert result["reward"] == row["reward"]
