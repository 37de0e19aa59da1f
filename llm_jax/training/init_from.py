"""Starting a run from pretrained weights: `config.train.init_from`.

  hf:FOLDER            a local Hugging Face folder (through llm_jax.convert)
  workdir:DIR          the latest checkpoint of an llm_jax run
  DIR/checkpoints/STEP one checkpoint of a run

The architecture comes from the source; the run's config keeps the fields that fine-tuning
chooses (FINETUNE_FIELDS: peft methods, task heads, dropout, dtypes, scan/remat). Parameters
present in both are copied; those the run's model adds (a classification head, LoRA factors,
prefixes) are initialised; a shape mismatch is an error unless the parameter matches
`train.reinit`. Unrolled layers (layers_0, layers_1, ...) and nn.scan-stacked ones (layers)
convert into each other.
"""

import json
import os
import re

from absl import logging
import ml_collections
import numpy as np

FINETUNE_FIELDS = ("peft", "num_labels", "mlm_head", "mlm_head_transform", "pooler", "nsp_head",
                   "dropout_rate", "attention_dropout_rate", "dtype", "param_dtype",
                   "scan_layers", "remat_policy", "attention")


def parse(init_from: str) -> tuple[str, str]:
  """('hf' | 'workdir' | 'step', path) of a train.init_from value."""
  if init_from.startswith("hf:"):
    kind, path = "hf", init_from[3:]
  elif init_from.startswith("workdir:"):
    kind, path = "workdir", init_from[len("workdir:"):]
  elif re.search(r"(^|/)checkpoints/\d+/?$", init_from):
    kind, path = "step", init_from
  else:
    raise ValueError(f"config.train.init_from={init_from!r}: expected 'hf:FOLDER', "
                     "'workdir:DIR' or a checkpoint step directory DIR/checkpoints/STEP")
  path = os.path.expanduser(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.train.init_from={init_from!r}: {path} is not a directory")
  return kind, path


def _step_dir(kind: str, path: str) -> tuple[str, int]:
  """(workdir, step) of a workdir (its latest checkpoint) or a checkpoint step directory."""
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  if kind == "step":
    step_path = os.path.normpath(path)
    return os.path.dirname(os.path.dirname(step_path)), int(os.path.basename(step_path))
  steps = load.checkpoint_steps(path)
  if not steps:
    raise FileNotFoundError(f"config.train.init_from: workdir {path} has no checkpoint")
  return path, steps[-1]


def source_model_config(init_from: str) -> ml_collections.ConfigDict:
  """The architecture of the init_from source as a model config."""
  kind, path = parse(init_from)
  if kind == "hf":
    from llm_jax import convert  # pylint: disable=g-import-not-at-top
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
      raise FileNotFoundError(f"config.train.init_from: {path} has no config.json")
    with open(config_path) as f:
      hf_config = json.load(f)
    if "model_type" not in hf_config:
      raise ValueError(f"{config_path} has no model_type")
    return convert._family_for(hf_config["model_type"]).config_from_hf(hf_config)  # pylint: disable=protected-access
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  workdir, _ = _step_dir(kind, path)
  return load.load_config(workdir).model


def resolve_config(cfg: ml_collections.ConfigDict) -> None:
  """In place: cfg.model takes the source's architecture and keeps its FINETUNE_FIELDS; an
  'hf' tokenizer without a path reads the init_from folder's tokenizer.json."""
  init_from = cfg.train.get("init_from", "")
  if not init_from:
    return
  source = source_model_config(init_from)
  if source.family != cfg.model.family:
    raise ValueError(
        f"config.train.init_from={init_from!r} holds a {source.family} model "
        f"({source.get('hf_model_type') or 'llm_jax'}), but config.model.family is "
        f"{cfg.model.family!r}: start from a config of that family")
  merged = ml_collections.ConfigDict(source.to_dict())
  for field in FINETUNE_FIELDS:
    if field in cfg.model:
      merged[field] = cfg.model[field]
  with cfg.unlocked():
    cfg.model = merged
    kind, path = parse(init_from)
    if kind == "hf" and cfg.data.tokenizer == "hf" and not cfg.data.tokenizer_path:
      cfg.data.tokenizer_path = os.path.join(path, "tokenizer.json")


def _source_params(init_from: str) -> dict[str, np.ndarray]:
  """{path: array} of every parameter of the source."""
  from llm_jax.training import partition  # pylint: disable=g-import-not-at-top
  kind, path = parse(init_from)
  if kind == "hf":
    from llm_jax import convert  # pylint: disable=g-import-not-at-top
    _, params, _ = convert.from_hf(path)
    return partition.flat(params)
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  workdir, step = _step_dir(kind, path)
  return partition.flat(load.restore_all_params(workdir, step))


def _restack(source: dict[str, np.ndarray], wanted: dict[str, tuple]) -> dict[str, np.ndarray]:
  """Adds scan-stacked ('.../layers/...') or unrolled ('.../layers_i/...') versions of source
  parameters that the wanted tree names and the source lacks."""
  out = dict(source)
  for name, shape in wanted.items():
    if name in out:
      continue
    parts = name.split("/")
    if "layers" in parts and shape:
      i = parts.index("layers")
      per_layer = ["/".join(parts[:i] + [f"layers_{j}"] + parts[i + 1:]) for j in range(shape[0])]
      if all(p in source for p in per_layer):
        out[name] = np.stack([source[p] for p in per_layer])
      continue
    match = next((m for m in re.finditer(r"(^|/)layers_(\d+)(/|$)", name)), None)
    if match:
      stacked = name[:match.start()] + f"{match.group(1)}layers{match.group(3)}" + name[match.end():]
      if stacked in source:
        out[name] = source[stacked][int(match.group(2))]
  return out


def initial_params(cfg: ml_collections.ConfigDict, abstract_params) -> dict[str, np.ndarray]:
  """{path: array} of the run's parameters that come from cfg.train.init_from; logs what is
  copied, newly initialised and left unused."""
  from llm_jax.training import partition  # pylint: disable=g-import-not-at-top
  wanted = {k: tuple(v.shape) for k, v in partition.flat(abstract_params).items()}
  source = _restack(_source_params(cfg.train.init_from), wanted)
  reinit = cfg.train.get("reinit", "")
  copied, new, reinitialised = {}, [], []
  for name, shape in wanted.items():
    if name not in source:
      new.append(name)
    elif tuple(np.shape(source[name])) == shape:
      copied[name] = source[name]
    elif reinit and re.search(reinit, name):
      reinitialised.append(name)
    else:
      raise ValueError(
          f"config.train.init_from={cfg.train.init_from!r}: parameter {name} has shape "
          f"{tuple(np.shape(source[name]))} there but {shape} in this model; set "
          f"config.train.reinit to a regex matching it to initialise it anew")
  used = set(copied) | set(reinitialised)
  unused = sorted(n for n in source if n not in used and n not in wanted
                  and not _is_restack_source(n, wanted))
  logging.info("init_from %s: %d parameters copied, %d initialised anew%s", cfg.train.init_from,
               len(copied), len(new) + len(reinitialised),
               "".join(f"\n  new: {n} {wanted[n]}" for n in new + reinitialised))
  if unused:
    logging.info("init_from %s: %d source parameters unused: %s", cfg.train.init_from,
                 len(unused), ", ".join(unused))
  return copied


def _is_restack_source(name: str, wanted) -> bool:
  stacked = re.sub(r"(^|/)layers_\d+(/|$)", r"\1layers\2", name)
  return stacked != name and stacked in wanted
