"""Adapter-only files: the peft parameters as safetensors plus adapter_config.json.

A folder written by save_adapter holds `adapter_model.safetensors` (tensors named by their
'/'-joined parameter path, e.g. 'decoder/layers_0/self_attention/query/lora_a') and
`adapter_config.json`: {"format": "llm_jax_adapter", "peft": model.peft, "model": a few model
fields}. (A Hugging Face peft folder has the same file names: read it with hf_peft.from_hf_peft.)
"""

import json
import os
import re
import shutil
import tempfile

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from llm_jax.convert import common
from llm_jax.models.config import PEFT_PARAMS

FORMAT = "llm_jax_adapter"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PEFT_PARAM = re.compile(PEFT_PARAMS)
_MODEL_FIELDS = ("family", "vocab_size", "d_model", "num_layers", "num_heads", "scan_layers",
                 "hf_model_type")


def is_peft_param(path: str) -> bool:
  """Whether the parameter at '/'-joined `path` belongs to a peft method (models' PEFT_PARAMS)."""
  return _PEFT_PARAM.search(path) is not None


def _flat(params) -> dict[str, object]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(params)).items()}


def _array(x) -> np.ndarray:
  x = x.unbox() if isinstance(x, nn.Partitioned) else x
  return np.asarray(jax.device_get(x))


def peft_params(params) -> dict[str, np.ndarray]:
  """{path: array} of the peft parameters of `params`."""
  return {k: _array(v) for k, v in _flat(params).items() if is_peft_param(k)}


def save_adapter(directory: str, model_cfg, params) -> None:
  """Writes the peft parameters of `params` and model.peft to `directory` (created; an existing
  one must be empty); nothing is left at `directory` if writing fails."""
  tensors = peft_params(params)
  if not tensors:
    raise ValueError("params hold no peft parameters (lora_a, lora_b, ia3_scale, prefix*, "
                     "prompt*, adapter*) to save")
  if os.path.exists(directory) and os.listdir(directory):
    raise ValueError(f"adapter folder {directory!r} exists and is not empty")
  config = {
      "format": FORMAT,
      "peft": model_cfg.peft.to_dict(),
      "model": {f: model_cfg.get(f) for f in _MODEL_FIELDS},
      "tensors": sorted(tensors),
  }
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".adapter-", dir=parent)
  try:
    common.write_safetensors(os.path.join(staging, WEIGHTS_FILE), tensors)
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    if os.path.exists(directory):
      os.rmdir(directory)
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def load_adapter(directory: str, params) -> tuple[dict, dict]:
  """(model.peft as saved, `params` with its peft leaves replaced by the saved tensors).

  `params` must already hold the adapter leaves (a model built with the saved model.peft):
  a parameter missing from the file, a tensor without a parameter, or a shape mismatch raises
  a ValueError naming the tensor. Saved dtypes are cast to the parameters' dtypes.
  """
  config_path = os.path.join(directory, CONFIG_FILE)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  for path in (config_path, weights_path):
    if not os.path.exists(path):
      raise ValueError(f"adapter folder {directory!r} has no {os.path.basename(path)}")
  with open(config_path) as f:
    config = json.load(f)
  if config.get("format") != FORMAT:
    raise ValueError(f"{config_path} was not written by save_adapter (no format={FORMAT!r}); "
                     f"a Hugging Face peft adapter loads with llm_jax.peft.hf_peft.from_hf_peft")
  tensors = common.read_safetensors(weights_path)
  flat = traverse_util.flatten_dict(dict(params))
  wanted = {"/".join(k): k for k in flat if is_peft_param("/".join(k))}
  missing = sorted(set(wanted) - set(tensors))
  if missing:
    raise ValueError(f"{weights_path}: tensor {missing[0]!r} is missing (the model has that "
                     f"adapter parameter; {len(missing)} missing in all)")
  extra = sorted(set(tensors) - set(wanted))
  if extra:
    raise ValueError(f"{weights_path}: tensor {extra[0]!r} has no adapter parameter in the "
                     f"model (build the model with the saved model.peft: {config['peft']})")
  for name, key in wanted.items():
    leaf = flat[key]
    target = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
    value = tensors[name]
    if tuple(value.shape) != tuple(np.shape(target)):
      raise ValueError(f"{weights_path}: tensor {name!r} has shape {tuple(value.shape)}, the "
                       f"model's parameter has {tuple(np.shape(target))}")
    value = value.astype(target.dtype)
    flat[key] = leaf.replace_boxed(value) if isinstance(leaf, nn.Partitioned) else value
  return config["peft"], traverse_util.unflatten_dict(flat)
