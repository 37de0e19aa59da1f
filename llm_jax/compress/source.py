"""The model to compress: a training workdir or a Hugging Face folder, unrolled."""

import os
import re

import jax
import ml_collections
import numpy as np


def unrolled(model_cfg, params):
  """(model config with scan_layers=False, params with layers_i subtrees)."""
  # pylint: disable=g-import-not-at-top
  from llm_jax import models
  from llm_jax.training import init_from
  from llm_jax.training import partition
  # pylint: enable=g-import-not-at-top
  if not model_cfg.get("scan_layers"):
    return model_cfg, params
  model_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  model_cfg.scan_layers = False
  wanted = {k: tuple(v.shape) for k, v in partition.flat(
      models.abstract_params(models.build_model(model_cfg), model_cfg)).items()}
  flat = init_from._restack(partition.flat(params), wanted)  # pylint: disable=protected-access
  return model_cfg, partition.unflat({k: flat[k] for k in wanted})


def load(workdir: str | None, hf: str | None, step: int | None = None):
  """(cfg, model, params as NumPy, tokenizer, tokenizer.json to copy or None)."""
  # pylint: disable=g-import-not-at-top
  from llm_jax import config as config_lib
  from llm_jax import models
  from llm_jax.evaluation import load as load_lib
  # pylint: enable=g-import-not-at-top
  if (workdir is None) == (hf is None):
    raise ValueError("pass exactly one of --workdir and --hf")
  tokenizer_file = None
  if workdir is not None:
    _, params, cfg, tokenizer = load_lib.load_from_workdir(workdir, step=step)
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if cfg.get("quantization") is not None and cfg.quantization.weights != "none":
      raise ValueError(f"--workdir={workdir!r} is already quantized "
                       f"({cfg.quantization.weights}); compress its float source instead")
  else:
    _, params, model_cfg, tokenizer = load_lib.load_from_hf(hf)
    cfg = config_lib.base_config()
    cfg.model = model_cfg
    cfg.data.tokenizer = "hf"
    tokenizer_file = os.path.join(hf, "tokenizer.json")
  params = jax.tree.map(np.asarray, jax.device_get(params))
  model_cfg, params = unrolled(cfg.model, params)
  with cfg.unlocked():
    cfg.model = model_cfg
    for section, default in _compress_sections().items():
      if cfg.get(section) is None:
        cfg[section] = default
  return cfg, models.build_model(cfg.model), params, tokenizer, tokenizer_file


def _compress_sections():
  from llm_jax.compress import config  # pylint: disable=g-import-not-at-top
  return {"quantization": config.default_quantization_config(),
          "distill": config.default_distill_config(),
          "pruning": config.default_pruning_config()}


def matching(pattern: str, names):
  regex = re.compile(pattern)
  return [n for n in names if regex.search(n)]
