r"""python -m llm_jax.train --config=configs/ppo_tiny.py --workdir=workdirs/ppo_tiny

PPO (the InstructGPT recipe, Ouyang et al. 2022) on generated arithmetic with the exact-match
reward: 4 completions of each of 32 prompts per iteration from the KV-cache sampler; per-token
rewards -kl_coef (log pi - log ref) plus the score on the last token, kl_coef adapted toward a
target KL (Ziegler et al. 2019); a separate critic (the decoder trunk with a per-token scalar
head, llm_jax/models/value_head.py, started from the same SFT workdir and checkpointed in
WORKDIR/critic); GAE (gamma 1, lambda 0.95) with whitened advantages; 4 epochs of 64-row
minibatches with the clipped policy and value losses. First make the starting policy:

  PYTHONPATH=. python experiments/arithmetic_sft.py --out=workdirs/arithmetic_sft

A reward model instead of the exact match (configs/reward_model_tiny.py):
  --config.alignment.reward=model:workdirs/reward_model_tiny
"""

from llm_jax import config as config_lib
from llm_jax.alignment import config as alignment_config


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "ppo"
  cfg.alignment = alignment_config.default_alignment_config()
  cfg.alignment.method = "ppo"
  cfg.alignment.reward = "arithmetic_exact_match"
  cfg.alignment.prompts_per_step = 32
  cfg.alignment.num_generations = 4
  cfg.alignment.max_new_tokens = 5
  cfg.alignment.max_prompt_length = 8
  cfg.alignment.epochs = 4
  cfg.alignment.kl_coef = 0.05
  cfg.alignment.kl_target = 1.0
  cfg.alignment.kl_horizon = 10000
  cfg.alignment.gamma = 1.0
  cfg.alignment.gae_lambda = 0.95
  cfg.alignment.critic_learning_rate = 1e-4
  cfg.optimizer.learning_rate = 5e-5
  cfg.optimizer.schedule = "constant"
  cfg.optimizer.warmup_steps = 5
  cfg.optimizer.weight_decay = 0.0
  cfg.train.init_from = "workdir:workdirs/arithmetic_sft"
  cfg.train.batch_size = 64
  cfg.train.steps = 40  # iterations
  cfg.train.log_every = 5
  cfg.train.eval_every = 10
  cfg.train.checkpoint_every = 20
  return cfg
