r"""python -m llm_jax.train --config=configs/reward_model_tiny.py --workdir=workdirs/reward_model_tiny

A reward model on generated arithmetic preference pairs ("12+7=" with the correct answer
chosen, a near miss rejected; llm_jax/data/arithmetic_preferences.py): the LLaMA-style tiny
decoder with a scalar head on each sequence's last token (model.num_labels=1), trained with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). The eval reports preference accuracy.
Start from the arithmetic SFT model for a better reward model (experiments/arithmetic_sft.py):

  python -m llm_jax.train --config=configs/reward_model_tiny.py --workdir=workdirs/reward_model_tiny \
      --config.train.init_from=workdir:workdirs/arithmetic_sft

Export it with `python -m llm_jax.convert to_hf --workdir=workdirs/reward_model_tiny --out=DIR`
(a LlamaForSequenceClassification with one label), or use it as the reward of the RL configs.
HH-RLHF rows: --config.task.preference_format=hh_rlhf --config.data.train_files=... with a
real tokenizer and --config.data.sequence_length=512.
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "reward_model"
  cfg.task.template = "{prompt}"
  cfg.model.num_labels = 1
  cfg.data.train_files = "arithmetic:preferences/train"
  cfg.data.eval_files = "arithmetic:preferences/validation"
  cfg.data.sequence_length = 16
  cfg.optimizer.learning_rate = 1e-3
  cfg.optimizer.warmup_steps = 20
  cfg.optimizer.weight_decay = 0.0
  cfg.train.batch_size = 32  # 16 pairs
  cfg.train.steps = 1000
  cfg.train.log_every = 20
  cfg.train.eval_every = 250
  cfg.train.eval_batches = 13
  cfg.train.checkpoint_every = 250
  return cfg
