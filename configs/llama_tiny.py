r"""python -m llm_jax.train --config=configs/llama_tiny.py --workdir=workdirs/llama_tiny

A 2-layer LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, grouped-query attention; d_model 64),
causal LM on the Python standard library's source with the byte tokenizer, context 128. The base
model that configs/sft_llama_lora.py instruction-tunes. About a minute on 2 CPU cores.
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
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
