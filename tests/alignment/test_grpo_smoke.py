"""A GRPO run end to end on a tiny model: metrics, checkpoint, and a workdir others can load."""

import numpy as np

from llm_jax.evaluation import load
from llm_jax.training import metrics as metrics_lib


def test_grpo_run_logs_rl_metrics_and_writes_a_loadable_checkpoint(grpo_run):
  workdir, result = grpo_run
  rows = metrics_lib.read_rows(workdir)
  train_rows = [r for r in rows if "reward" in r]
  assert [r["step"] for r in train_rows] == [1, 2]
  for key in ("reward", "kl", "entropy", "clip_fraction", "response_length", "loss",
              "rollout_tokens_per_sec", "grad_norm"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert all(0 < r["response_length"] <= 3 for r in train_rows)
  assert all(r["entropy"] > 0 for r in train_rows)
  eval_rows = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in eval_rows] == [0, 2]
  assert result["eval_reward"] == eval_rows[-1]["eval_reward"]
  assert load.checkpoint_steps(workdir) == [2]
  _, params, cfg, _ = load.load_from_workdir(workdir)
  assert cfg.task.name == "grpo" and "head" in params
