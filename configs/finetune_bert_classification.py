r"""python -m llm_jax.train --config=configs/finetune_bert_classification.py --workdir=workdirs/finetune_bert_classification \
    --config.train.init_from=workdir:workdirs/bert_tiny

Fine-tunes a pretrained encoder (here the MLM run of configs/bert_tiny.py) to tell which of 8
standard-library packages a function's source comes from (stdlib_tasks 'function_module':
asyncio, email, http, importlib, logging, multiprocessing, unittest, xml). The pooler and the
classification head are new and initialised; the log lists them. Every eval reports accuracy and
macro-F1. Without init_from it trains the same model from random weights (the baseline).

A real checkpoint and dataset, e.g. BERT-base on SST-2 (GLUE TSV files, columns sentence/label):

  python -m llm_jax.train --config=configs/finetune_bert_classification.py --workdir=workdirs/sst2 \
      --config.train.init_from=hf:/path/to/bert-base-uncased --config.data.tokenizer=hf \
      --config.data.train_files=/data/SST-2/train.tsv --config.data.eval_files=/data/SST-2/dev.tsv \
      --config.task.text_field=sentence --config.task.labels="('0', '1')" \
      --config.model.num_labels=2 --config.data.sequence_length=128 \
      --config.train.batch_size=32 --config.train.steps=6000 --config.optimizer.learning_rate=2e-5
"""

from llm_jax import config as config_lib
from llm_jax.data.stdlib_tasks import MODULES


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("bert_tiny")
  cfg.task.name = "classification"
  cfg.task.text_field = "text"
  cfg.task.label_field = "label"
  cfg.task.labels = MODULES
  cfg.model.num_labels = len(MODULES)
  cfg.model.mlm_head = False
  cfg.model.nsp_head = False
  cfg.model.pooler = True
  cfg.model.dropout_rate = 0.1
  cfg.data.train_files = "stdlib:function_module/train"
  cfg.data.eval_files = "stdlib:function_module/validation"
  cfg.data.sequence_length = 128
  cfg.optimizer.learning_rate = 1e-3
  cfg.optimizer.warmup_steps = 30
  cfg.optimizer.weight_decay = 0.01
  cfg.optimizer.lr_multipliers = ((r"^(classifier|pooler)/", 5.0),)
  cfg.train.batch_size = 16
  cfg.train.steps = 300
  cfg.train.log_every = 20
  cfg.train.eval_every = 100
  cfg.train.eval_batches = 27  # the whole validation split (423 rows)
  cfg.train.checkpoint_every = 100
  return cfg
