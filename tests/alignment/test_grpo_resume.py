"""Stopping a GRPO run after iteration k and resuming it equals the uninterrupted run bit for
bit: rollouts, prompt choice and minibatch order come from the iteration."""

import jax
import numpy as np

from llm_jax.alignment import rl_loop
from llm_jax.evaluation import load
from llm_jax.training import metrics as metrics_lib

from tests.alignment import rl_testing


def test_stop_and_resume_equals_the_uninterrupted_run(grpo_run, tmp_path):
  uninterrupted, _ = grpo_run
  workdir = str(tmp_path / "resumed")
  cfg = rl_testing.tiny_rl_config("grpo", steps=2)
  rl_loop.train(cfg, workdir, stop_at_step=1)
  assert load.checkpoint_steps(workdir) == [1]
  rl_loop.train(rl_testing.tiny_rl_config("grpo", steps=2), workdir)
  expected = load.restore_all_params(uninterrupted, 2)
  got = load.restore_all_params(workdir, 2)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b)
  reward = lambda w: [r["reward"] for r in metrics_lib.read_rows(w) if "reward" in r]
  assert reward(workdir) == reward(uninterrupted)
