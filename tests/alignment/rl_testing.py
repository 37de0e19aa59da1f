"""Tiny RL configs for the alignment tests: a 1-layer decoder, single-digit arithmetic."""

from llm_jax import config as config_lib
from llm_jax.alignment import config as alignment_config


def tiny_rl_config(method="grpo", steps=2, **alignment):
  cfg = config_lib.base_config("llama_tiny")
  cfg.model.update(d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, d_ff=32,
                   max_len=32)
  cfg.task.name = method
  cfg.alignment = alignment_config.default_alignment_config()
  cfg.alignment.update(method=method, arithmetic_max_operand=9, arithmetic_operators="+",
                       arithmetic_train_problems=64, arithmetic_held_out=8, prompts_per_step=4,
                       num_generations=4, max_prompt_length=4, max_new_tokens=3, eval_examples=8,
                       eval_batch_size=8, kl_coef=0.05)
  cfg.alignment.update(alignment)
  cfg.optimizer.update(learning_rate=1e-3, warmup_steps=0)
  cfg.train.update(batch_size=8, steps=steps, log_every=1, eval_every=steps, checkpoint_every=0,
                   keep_checkpoints=5, progress_bar=False, tensorboard=False, plot=False,
                   async_checkpointing=False)
  return cfg


class FailingReward:
  """A reward that returns `value` from its `fail_at`-th call on (1-based), else exact match."""

  def __init__(self):
    self.calls, self.fail_at, self.value = 0, None, float("nan")

  def __call__(self, completion, example):
    self.calls += 1
    if self.fail_at is not None and self.calls >= self.fail_at:
      if isinstance(self.value, Exception):
        raise self.value
      return self.value
    return float(completion == example["answer"])


failing_reward = FailingReward()


def length_reward(completion, example):
  """A dense reward for tests of random models: the completion's length."""
  del example
  return float(len(completion))
