"""Hugging Face <-> llm_jax conversion: `from_hf(folder)` and `to_hf(model_cfg, params, folder)`.

One module per family (gpt2, llama, mistral, mixtral, bert (also RoBERTa), t5, bart), each with
`HF_MODEL_TYPES`, `config_from_hf`, `params_from_hf`, `config_to_hf`, `params_to_hf`
and `IGNORED_TENSORS` (regexes of checkpoint buffers that hold no parameters), and optionally
`prepare_tensors` (checkpoint tensors -> the names its parameter table reads);
`_MODULE_FOR_MODEL_TYPE` maps a Hugging Face `model_type` to its module.
"""

import importlib
import re
import warnings

import jax
import numpy as np

from llm_jax.convert.common import ConversionError, TensorReader, read_hf_folder, write_hf_folder

_MODULE_FOR_MODEL_TYPE = {
  "gpt2": "gpt2",
  "llama": "llama",
  "bert": "bert",
  "roberta": "bert",
  "t5": "t5",
  "bart": "bart",
  "mistral": "mistral",
  "mixtral": "mixtral",
}


def _family_for(model_type: str):
  if model_type not in _MODULE_FOR_MODEL_TYPE:
    raise ConversionError(
      f"unknown Hugging Face architecture model_type={model_type!r}; "
      f"supported: {', '.join(_MODULE_FOR_MODEL_TYPE)}"
    )
  return importlib.import_module(f"llm_jax.convert.{_MODULE_FOR_MODEL_TYPE[model_type]}")


def _check_tree(params, expected, where: str) -> None:
  flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  name = jax.tree_util.keystr
  for path in want.keys() - flat.keys():
    raise ConversionError(f"{where}: parameter {name(path)} was not produced by the converter")
  for path in flat.keys() - want.keys():
    raise ConversionError(f"{where}: parameter {name(path)} does not exist in the model")
  for path, leaf in flat.items():
    if tuple(np.shape(leaf)) != tuple(want[path].shape):
      raise ConversionError(
        f"{where}: parameter {name(path)} has shape {np.shape(leaf)}, "
        f"the model expects {want[path].shape}"
      )


def from_hf(path: str):
  """Reads a local Hugging Face folder -> (model, params, model_cfg)."""
  from llm_jax import models

  hf_config, tensors = read_hf_folder(path)
  if "model_type" not in hf_config:
    raise ConversionError(f"{path}/config.json has no model_type")
  family = _family_for(hf_config["model_type"])
  cfg = family.config_from_hf(hf_config)
  if hasattr(family, "prepare_tensors"):
    tensors = family.prepare_tensors(tensors)
  reader = TensorReader(tensors, source=path)
  params = family.params_from_hf(hf_config, reader, cfg)
  unused = [n for n in reader.unused() if not any(re.search(p, n) for p in family.IGNORED_TENSORS)]
  if unused:
    warnings.warn(f"{path}: tensors not used by the conversion: {unused}")
  model = models.build_model(cfg)
  _check_tree(params, models.abstract_params(model, cfg), path)
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
  return model, params, cfg


def to_hf(model_cfg, params, path: str) -> None:
  """Writes `params` as a Hugging Face folder that `transformers` loads; nothing is left on error."""
  from llm_jax import models

  model_type = (
    model_cfg.get("hf_model_type")
    or {
      "decoder": ("mixtral" if model_cfg.moe.num_experts else "llama")
      if model_cfg.position == "rope" else "gpt2",
      "encoder": "bert",
      "encoder_decoder": "t5",
    }[model_cfg.family]
  )
  family = _family_for(model_type)
  hf_config = family.config_to_hf(model_cfg)
  params = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
  _check_tree(params, models.abstract_params(models.build_model(model_cfg), model_cfg), "params")
  write_hf_folder(path, hf_config, family.params_to_hf(model_cfg, params))


__all__ = ["ConversionError", "from_hf", "to_hf"]
