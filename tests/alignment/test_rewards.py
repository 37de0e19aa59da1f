"""Rewards: built-in and Python functions; a reward that raises or is NaN names the prompt, and
the run keeps its last good checkpoint."""

import pytest

from llm_jax.alignment import rewards
from llm_jax.alignment import rl_loop
from llm_jax.evaluation import load

from tests.alignment import rl_testing


def test_builtin_and_python_rewards():
  exact = rewards.make_reward("arithmetic_exact_match")
  got = exact(["19", "18", "19\n"], [{"answer": "19"}] * 3, [])
  assert got.tolist() == [1.0, 0.0, 1.0]
  spec = "python:tests.alignment.rl_testing:failing_reward"
  assert rewards.make_reward(spec)(["4"], [{"answer": "4"}], []).tolist() == [1.0]
  with pytest.raises(ValueError, match="cannot load"):
    rewards.make_reward("python:tests.alignment.rl_testing:nope")
  with pytest.raises(ValueError, match="alignment.reward"):
    rewards.make_reward("bleu")


@pytest.mark.parametrize("bad", [float("nan"), "high", ZeroDivisionError("boom")])
def test_a_bad_reward_names_the_prompt(bad):
  fn = lambda completion, example: bad if completion == "x" else 1.0
  if isinstance(bad, Exception):
    def fn(completion, example):  # pylint: disable=function-redefined
      if completion == "x":
        raise bad
      return 1.0
  reward = rewards.FunctionReward(fn, "test")
  with pytest.raises(rewards.RewardError, match=r"prompt 42 \('7\+1='\), completion 'x'"):
    reward(["8", "x"], [{"prompt": "7+1="}] * 2, [], prompt_indices=[3, 42])


def test_a_nan_reward_stops_the_run_keeping_the_last_good_checkpoint(tmp_path):
  cfg = rl_testing.tiny_rl_config("grpo", steps=3,
                                  reward="python:tests.alignment.rl_testing:failing_reward")
  cfg.train.checkpoint_every = 1
  rows = cfg.alignment.prompts_per_step * cfg.alignment.num_generations
  failing = rl_testing.failing_reward
  failing.calls, failing.value = 0, float("nan")
  failing.fail_at = cfg.alignment.eval_examples + rows + 1  # the 2nd iteration's first row
  workdir = str(tmp_path / "run")
  with pytest.raises(rewards.RewardError, match=r"returned nan on prompt \d+ \('\d\+\d='\)"):
    rl_loop.train(cfg, workdir)
  assert load.checkpoint_steps(workdir) == [1]
  failing.fail_at = None


def test_a_reward_model_needs_a_scalar_head(grpo_run):
  workdir, _ = grpo_run  # a policy workdir: an LM head, no scalar head
  with pytest.raises(ValueError, match="no scalar head"):
    rewards.make_reward(f"model:{workdir}")
