r"""python -m llm_jax.train --config=configs/grpo_tiny.py --workdir=workdirs/grpo_tiny

GRPO (Shao et al. 2024) on generated arithmetic ("12+7=" -> "19", llm_jax/data/arithmetic.py)
with the exact-match reward: 8 completions of each of 16 prompts per iteration, sampled by the
KV-cache decoder with the current parameters; group-relative advantages; the clipped objective
plus 0.04 x the k3 KL to the frozen initial policy; one pass of two 64-row minibatch updates.
Every 10 iterations greedy answers to the 400 held-out problems (never trained on) give
eval_reward, the held-out exact match. First make the starting policy (pretrained and SFT'd on
arithmetic, about 600 steps; experiments/arithmetic_sft.py):

  PYTHONPATH=. python experiments/arithmetic_sft.py --out=workdirs/arithmetic_sft

Another reward: --config.alignment.reward=python:my_module:my_reward (function(completion,
example) -> float) or model:workdirs/reward_model_tiny (configs/reward_model_tiny.py).
"""

from llm_jax import config as config_lib
from llm_jax.alignment import config as alignment_config


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "grpo"
  cfg.alignment = alignment_config.default_alignment_config()
  cfg.alignment.method = "grpo"
  cfg.alignment.reward = "arithmetic_exact_match"
  cfg.alignment.prompts_per_step = 16
  cfg.alignment.num_generations = 8
  cfg.alignment.max_new_tokens = 5  # '-49' + EOS fits
  cfg.alignment.max_prompt_length = 8
  cfg.alignment.temperature = 1.0
  cfg.alignment.kl_coef = 0.04
  cfg.alignment.epochs = 1
  cfg.optimizer.learning_rate = 1e-5
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
