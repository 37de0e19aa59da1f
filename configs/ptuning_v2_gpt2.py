r"""python -m llm_jax.train --config=configs/ptuning_v2_gpt2.py --workdir=workdirs/ptuning_v2_gpt2 \
    --config.train.init_from=workdir:workdirs/gpt_tiny

P-tuning v2 (deep prompt tuning, Liu et al. 2022): learned keys and values (16 per layer,
reparameterised through an MLP of width 128, as prefix tuning does) in every attention layer of
a frozen pretrained decoder (here the run of configs/gpt_tiny.py), and a new classification
head on the last token: which of 8 standard-library packages a function comes from
(stdlib_tasks 'function_module'). Only the prefixes and the head train. Context: the byte
tokenizer's last 48 tokens of each function, as the 16 prefix positions come first (GPT-2
numbers real tokens after the prefix, as Hugging Face does).

A real checkpoint and dataset, e.g. GPT-2 on a sentiment TSV (columns sentence/label):

  python -m llm_jax.train --config=configs/ptuning_v2_gpt2.py --workdir=workdirs/ptuning_sst2 \
      --config.train.init_from=hf:/path/to/gpt2 --config.data.tokenizer=hf \
      --config.data.train_files=/data/SST-2/train.tsv --config.data.eval_files=/data/SST-2/dev.tsv \
      --config.task.text_field=sentence --config.task.labels="('0', '1')" \
      --config.model.num_labels=2 --config.data.sequence_length=128 \
      --config.model.peft.prefix_length=32 --config.model.peft.prefix_hidden=512
"""

from llm_jax import config as config_lib
from llm_jax.data.stdlib_tasks import MODULES


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("gpt_tiny")
  cfg.task.name = "classification"
  cfg.task.text_field = "text"
  cfg.task.label_field = "label"
  cfg.task.labels = MODULES
  cfg.model.num_labels = len(MODULES)
  cfg.model.peft.prefix_length = 16
  cfg.model.peft.prefix_hidden = 128
  cfg.data.train_files = "stdlib:function_module/train"
  cfg.data.eval_files = "stdlib:function_module/validation"
  cfg.data.sequence_length = 48
  cfg.optimizer.learning_rate = 5e-3
  cfg.optimizer.warmup_steps = 30
  cfg.optimizer.weight_decay = 0.0
  cfg.train.batch_size = 16
  cfg.train.steps = 300
  cfg.train.log_every = 20
  cfg.train.eval_every = 100
  cfg.train.eval_batches = 27
  cfg.train.checkpoint_every = 100
  return cfg
