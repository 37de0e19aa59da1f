r"""python -m llm_jax.train --config=configs/switch_t5_tiny.py --workdir=workdirs/switch_t5_tiny

A tiny Switch-Transformer-style encoder-decoder: t5_tiny (T5 v1.1) whose every second layer
(layers 1, 3, ...; as Hugging Face SwitchTransformers with sparse_step 2) has a Switch FFN of
4 experts, top-1 routing with capacity factor 1.25 (tokens over capacity pass through the
residual), load-balancing loss 0.01 and router z-loss 0.001. Span corruption on the stdlib corpus.
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("t5_tiny")
  cfg.model.moe.update(dict(num_experts=4, router="switch", every=2, offset=1,
                            capacity_factor=1.25, load_balance_coef=0.01, z_loss_coef=0.001))
  cfg.data.sequence_length = 64
  cfg.objective.name = "span_corruption"
  cfg.objective.noise_density = 0.15
  cfg.objective.mean_noise_span_length = 3.0
  cfg.optimizer.learning_rate = 1e-3
  cfg.optimizer.warmup_steps = 50
  cfg.train.batch_size = 12
  cfg.train.steps = 1000
  cfg.train.log_every = 20
  cfg.train.eval_every = 250
  cfg.train.checkpoint_every = 250
  return cfg
