r"""python -m llm_jax.train --config=configs/finetune_t5_seq2seq.py --workdir=workdirs/finetune_t5_seq2seq \
    --config.train.init_from=workdir:workdirs/t5_tiny

Adapts a pretrained encoder-decoder (here the span-corruption run of configs/t5_tiny.py) to a
seq2seq task: a function's docstring in, its name out (stdlib_tasks 'docstring_to_name').
Every eval greedily decodes validation examples and reports exact match, BLEU and ROUGE beside
the loss.

A real checkpoint and dataset, e.g. T5 v1.1 on a summarisation JSONL with document/summary:

  python -m llm_jax.train --config=configs/finetune_t5_seq2seq.py --workdir=workdirs/t5_summaries \
      --config.train.init_from=hf:/path/to/t5-v1_1-base \
      --config.data.tokenizer=sentencepiece --config.data.tokenizer_path=/path/to/spiece.model \
      --config.data.train_files=/data/train.jsonl --config.data.eval_files=/data/dev.jsonl \
      --config.task.input_field=document --config.task.target_field=summary \
      --config.data.sequence_length=512 --config.data.target_length=128 \
      --config.optimizer.name=adafactor --config.optimizer.learning_rate=1e-3
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("t5_tiny")
  cfg.task.name = "seq2seq"
  cfg.task.input_field = "input"
  cfg.task.target_field = "target"
  cfg.task.eval_generate_examples = 32
  cfg.task.eval_max_new_tokens = 24
  cfg.data.train_files = "stdlib:docstring_to_name/train"
  cfg.data.eval_files = "stdlib:docstring_to_name/validation"
  cfg.data.sequence_length = 128
  cfg.data.target_length = 24
  cfg.optimizer.learning_rate = 1e-3
  cfg.optimizer.warmup_steps = 30
  cfg.train.batch_size = 16
  cfg.train.steps = 300
  cfg.train.log_every = 20
  cfg.train.eval_every = 100
  cfg.train.checkpoint_every = 100
  return cfg
