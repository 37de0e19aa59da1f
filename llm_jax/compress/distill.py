"""The frozen teacher of a distillation run (config.distill.teacher): its model and weights.

  workdir:DIR   the latest checkpoint of an llm_jax run (a compressed one too)
  hf:FOLDER     a local Hugging Face folder

The teacher may be another size of the family; it must share the student's vocabulary.
"""

import ml_collections
import numpy as np


def enabled(cfg) -> bool:
  return cfg.get("distill") is not None and bool(cfg.distill.get("teacher"))


def teacher_config(cfg) -> ml_collections.ConfigDict:
  """The teacher's model config; a vocabulary other than the student's is an error."""
  from llm_jax.training import init_from  # pylint: disable=g-import-not-at-top
  teacher = cfg.distill.teacher
  try:
    model_cfg = init_from.source_model_config(teacher)
  except ValueError as e:
    raise ValueError(str(e).replace("config.train.init_from", "config.distill.teacher")) from e
  if int(model_cfg.vocab_size) != int(cfg.model.vocab_size):
    raise ValueError(f"config.distill.teacher={teacher!r} has vocab_size {model_cfg.vocab_size}, "
                     f"the student (model.vocab_size) {cfg.model.vocab_size}: a teacher must "
                     "share the student's tokenizer and vocabulary")
  model_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  model_cfg.dropout_rate = 0.0
  model_cfg.attention_dropout_rate = 0.0
  return model_cfg


def teacher_model(cfg):
  from llm_jax import models  # pylint: disable=g-import-not-at-top
  return models.build_model(teacher_config(cfg))


def teacher_params(cfg):
  """The teacher's parameters as NumPy (quantized kernels stay QuantizedArrays)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from llm_jax.evaluation import load
  from llm_jax.training import init_from
  # pylint: enable=g-import-not-at-top
  kind, path = init_from.parse(cfg.distill.teacher)
  if kind == "hf":
    from llm_jax import convert  # pylint: disable=g-import-not-at-top
    return convert.from_hf(path)[1]
  _, params, _, _ = load.load_from_workdir(path)
  return jax.tree.map(np.asarray, jax.device_get(params))
