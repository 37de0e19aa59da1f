r"""python -m llm_jax.train --config=configs/moe_tiny.py --workdir=workdirs/moe_tiny

A 2-layer Mixtral-style decoder (llama_tiny with a sparse MoE FFN in every layer: 4 SwiGLU
experts of width 128, softmax top-2 router with renormalised gates, dropless routing through
jax.lax.ragged_dot, Switch load-balancing loss 0.01 and router z-loss 0.001), causal LM on the
Python standard library's source with the byte tokenizer, context 128. Expert parallelism:
--config.mesh.expert=N (N divides the 4 experts) shards the experts over N devices.
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.model.moe.update(dict(num_experts=4, top_k=2, router="topk", normalize_top_k=True,
                            capacity_factor=0.0, load_balance_coef=0.01, z_loss_coef=0.001))
  cfg.data.sequence_length = 128
  cfg.objective.name = "clm"
  cfg.optimizer.learning_rate = 2e-3
  cfg.optimizer.warmup_steps = 50
  cfg.train.batch_size = 12
  cfg.train.steps = 1000
  cfg.train.log_every = 20
  cfg.train.eval_every = 250
  cfg.train.checkpoint_every = 250
  return cfg
