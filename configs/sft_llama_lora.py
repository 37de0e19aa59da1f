r"""python -m llm_jax.train --config=configs/sft_llama_lora.py --workdir=workdirs/sft_llama_lora \
    --config.train.init_from=workdir:workdirs/llama_tiny

Instruction-tunes a pretrained LLaMA-style decoder (here the run of configs/llama_tiny.py) with
LoRA (rank 8, alpha 16) on every attention and MLP projection, the base frozen: prompts "Write
the first line of the docstring of NAME(ARGS)" with the docstring's first line as the response
(stdlib_tasks 'docstring_summary'), loss on the response tokens only. Every eval greedily
generates answers and reports exact match, BLEU and ROUGE. Add
--config.model.peft.base_quantization=nf4 for QLoRA (the frozen base stored in 4-bit NF4).

A real checkpoint and chat data (JSONL rows {"messages": [{"role": ..., "content": ...}, ...]}):

  python -m llm_jax.train --config=configs/sft_llama_lora.py --workdir=workdirs/sft_tinyllama \
      --config.train.init_from=hf:/path/to/TinyLlama-1.1B-Chat-v1.0 --config.data.tokenizer=hf \
      --config.task.chat_template=/path/to/TinyLlama-1.1B-Chat-v1.0/tokenizer_config.json \
      --config.data.train_files=/data/chat/train.jsonl --config.data.eval_files=/data/chat/dev.jsonl \
      --config.data.sequence_length=1024 --config.model.dtype=bfloat16 --config.model.scan_layers=True
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "sft"
  cfg.task.prompt_field = "prompt"
  cfg.task.response_field = "response"
  cfg.task.template = "{prompt}\n"
  cfg.task.eval_generate_examples = 32
  cfg.task.eval_max_new_tokens = 48
  cfg.model.peft.lora_rank = 8
  cfg.model.peft.lora_alpha = 16.0
  cfg.model.peft.lora_dropout = 0.05
  cfg.model.peft.lora_targets = r"attention/(query|key|value|out)$|mlp/(wi_0|wi_1|wo)$"
  cfg.data.train_files = "stdlib:docstring_summary/train"
  cfg.data.eval_files = "stdlib:docstring_summary/validation"
  cfg.data.sequence_length = 128
  cfg.optimizer.learning_rate = 3e-3
  cfg.optimizer.warmup_steps = 30
  cfg.optimizer.weight_decay = 0.0
  cfg.train.batch_size = 16
  cfg.train.steps = 300
  cfg.train.log_every = 20
  cfg.train.eval_every = 100
  cfg.train.checkpoint_every = 100
  return cfg
