"""The experiment's `alignment` section: reinforcement learning with a policy that generates
(task.name 'grpo' or 'ppo'; llm_jax/alignment/rl_loop.py).

One RL iteration (one `train.steps` unit, one checkpoint step) is: sample `num_generations`
completions for each of `prompts_per_step` prompts with the KV-cache sampler, score them,
compute advantages, then `epochs` passes of minibatch updates (`train.batch_size` rows each)
through the train step.
"""

import ml_collections

METHODS = ("grpo", "ppo")


def default_alignment_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "grpo"  # 'grpo' | 'ppo'; equals task.name
  # Prompts: 'arithmetic' (generated problems, llm_jax/data/arithmetic.py: the train split for
  # rollouts, the disjoint held-out split for evaluation) or JSONL files with a 'prompt' field
  # and whatever fields the reward reads (e.g. 'answer').
  c.prompts = "arithmetic"
  c.eval_prompts = "arithmetic"
  c.template = "{prompt}"  # how a row's fields become the prompt text
  c.arithmetic_max_operand = 49
  c.arithmetic_operators = "+-"
  c.arithmetic_train_problems = 4000
  c.arithmetic_held_out = 400
  c.arithmetic_seed = 0
  # Reward: a built-in name ('arithmetic_exact_match'), 'python:module:function' with
  # function(completion: str, example: dict) -> float, or 'model:WORKDIR' (a reward model
  # trained with task.name='reward_model': the scalar head on prompt + completion).
  c.reward = "arithmetic_exact_match"
  # Rollouts.
  c.prompts_per_step = 16
  c.num_generations = 8  # G completions per prompt
  c.max_prompt_length = 16  # tokens; longer prompts are an error naming the prompt
  c.max_new_tokens = 8
  c.temperature = 1.0
  c.top_k = 0
  c.top_p = 1.0
  c.stop_at_newline = True  # a completion also ends at its first '\n' (always at EOS)
  # Updates.
  c.epochs = 1  # passes over each rollout batch
  c.clip_eps = 0.2
  c.loss_normalization = "token"  # 'token': mean over all completion tokens; 'sequence'
  # GRPO: group-relative advantages (r - mean_G) / (std_G + 1e-4) ('group'), with the batch's
  # std ('batch') or unscaled ('none'); kl_coef is beta of the k3 KL-to-reference loss term.
  c.scale_rewards = "group"
  c.kl_coef = 0.04
  # PPO: per-token reward -kl_coef * (log pi - log ref) plus the score at the last token; the
  # adaptive controller of Ziegler et al. moves kl_coef toward kl_target (0 = fixed kl_coef).
  c.kl_target = 6.0
  c.kl_horizon = 10000
  c.gamma = 1.0
  c.gae_lambda = 0.95
  c.whiten_advantages = True
  c.value_clip = 0.2
  c.critic_learning_rate = 1e-3
  # Evaluation: greedy held-out exact match (arithmetic) every train.eval_every iterations.
  c.eval_examples = 400
  c.eval_batch_size = 100
  return c
