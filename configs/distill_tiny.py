r"""python -m llm_jax.train --config=configs/distill_tiny.py --workdir=workdirs/distill_tiny

Knowledge distillation: a 2-layer GPT student (d_model 64) learns the byte-level Python
standard library corpus from the frozen 4-layer teacher of configs/gpt_tiny.py (train it first:
python -m llm_jax.train --config=configs/gpt_tiny.py --workdir=workdirs/gpt_tiny). The loss
mixes T^2 KL(teacher || student) at temperature 2 with the hard-label CE (alpha 0.5).
The same run with --config.distill.teacher='' is the student without KD.
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.d_model = 64
  cfg.model.num_layers = 2
  cfg.model.num_heads = 2
  cfg.model.d_ff = 256
  cfg.data.source = "stdlib"
  cfg.data.tokenizer = "byte"
  cfg.data.sequence_length = 64
  cfg.objective.name = "clm"
  cfg.distill.teacher = "workdir:workdirs/gpt_tiny"
  cfg.distill.temperature = 2.0
  cfg.distill.alpha = 0.5
  cfg.optimizer.learning_rate = 1e-3
  cfg.optimizer.warmup_steps = 50
  cfg.train.batch_size = 12
  cfg.train.steps = 500
  cfg.train.log_every = 20
  cfg.train.eval_every = 250
  cfg.train.checkpoint_every = 250
  return cfg
