"""Model, parameters, config and tokenizer from a training workdir or a Hugging Face folder.

A workdir holds `config.json` (the resolved experiment config) and orbax checkpoints under
`checkpoints/<step>/state` (a TrainState of step, params, opt_state); only `params` is read.
"""

import json
import os
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "state"


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the finished checkpoints in workdir/checkpoints, oldest first."""
  directory = epath.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.name.isdigit() and (p / STATE_ITEM).is_dir())


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The experiment config a run wrote to workdir/config.json."""
  path = epath.Path(workdir) / "config.json"
  if not epath.Path(workdir).is_dir():
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  if not path.exists():
    raise FileNotFoundError(f"workdir {workdir!r} has no config.json; is it a training workdir?")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


REFERENCE_PREFIX = "reference/"


def _stored_parts(state_dir: epath.Path) -> dict[str, set[str]]:
  """{'params': names, 'frozen': names} of the parameters a TrainState checkpoint holds."""
  checkpointer = ocp.PyTreeCheckpointer()
  stored = checkpointer.metadata(state_dir).item_metadata.tree
  if "params" not in stored:
    raise ValueError(f"checkpoint {state_dir} has no 'params' (found {sorted(stored)})")
  flat = lambda tree: {jax.tree_util.keystr(p, simple=True, separator="/")
                       for p, _ in jax.tree_util.tree_flatten_with_path(tree or {})[0]}
  return {"params": flat(stored["params"]), "frozen": flat(stored.get("frozen"))}, stored


def _restore_params(state_dir: epath.Path, abstract_params: Any, shardings: Any | None) -> Any:
  """Reads every parameter (trainable `params` and `frozen`) of a TrainState checkpoint,
  checking names and shapes first; returns the whole tree."""
  from llm_jax.training import partition  # pylint: disable=g-import-not-at-top
  parts, stored = _stored_parts(state_dir)
  stored_shapes = {}
  for item in parts:
    for path, meta in jax.tree_util.tree_flatten_with_path(stored.get(item) or {})[0]:
      stored_shapes[jax.tree_util.keystr(path, simple=True, separator="/")] = tuple(meta.shape)
  wanted = {k: tuple(v.shape) for k, v in partition.flat(abstract_params).items()}
  for name in sorted(wanted.keys() - stored_shapes.keys()):
    raise ValueError(f"checkpoint {state_dir}: parameter {name} of the model is missing")
  for name in sorted(stored_shapes.keys() - wanted.keys()):
    if name.startswith((REFERENCE_PREFIX, "teacher/")):  # frozen reference policy / teacher
      continue
    raise ValueError(f"checkpoint {state_dir}: parameter {name} does not exist in the model "
                     "(a quantized base? load it with the run's mesh)")
  for name, shape in wanted.items():
    if stored_shapes[name] != shape:
      raise ValueError(f"checkpoint {state_dir}: parameter {name} has shape "
                       f"{stored_shapes[name]}, the model expects {shape}")
  item = dict(zip(("params", "frozen"), partition.split(abstract_params, parts["params"])))
  if shardings is None:
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  else:
    split_shardings = dict(zip(("params", "frozen"), partition.split(shardings, parts["params"])))
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), split_shardings)
  item = {k: v for k, v in item.items() if jax.tree.leaves(v)}
  restore_args = {k: restore_args[k] for k in item}
  restored = ocp.PyTreeCheckpointer().restore(state_dir, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))
  return partition.merge(restored["params"], restored.get("frozen", {}))


def restore_all_params(workdir: str, step: int) -> Any:
  """Every parameter of a run's checkpoint at `step` as NumPy, whatever its trainable split."""
  from llm_jax import models  # pylint: disable=g-import-not-at-top
  cfg = load_config(workdir)
  model = models.build_model(cfg.model)
  state_dir = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR / str(step) / STATE_ITEM
  if not state_dir.is_dir():
    raise FileNotFoundError(f"workdir {workdir!r} has no checkpoint at step {step}")
  return _restore_params(state_dir, models.abstract_params(model, cfg.model), None)


def load_from_workdir(workdir: str, *, step: int | None = None, mesh=None):
  """(model, params, cfg, tokenizer) of the latest (or the given) checkpoint of a run.

  Without `mesh` the parameters land on the default device; with one they are sharded as
  the run's `sharding.rules` say (the layout the training eval step expects).
  """
  # pylint: disable=g-import-not-at-top
  from llm_jax import data
  from llm_jax import models
  # pylint: enable=g-import-not-at-top

  cfg = load_config(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f"workdir {workdir!r} has no checkpoint under {os.path.join(workdir, CHECKPOINT_DIR)}")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f"workdir {workdir!r} has no checkpoint at step {step}; steps: {steps}")
  from llm_jax.compress import checkpoint as compressed  # pylint: disable=g-import-not-at-top
  if compressed.is_quantized(cfg):  # packed integer kernels: written by llm_jax.compress
    return compressed.load_quantized_workdir(workdir, cfg, step, mesh)
  model = models.build_model(cfg.model)
  if mesh is None:
    abstract_params, shardings = models.abstract_params(model, cfg.model), None
  else:
    from llm_jax.training import train_step  # pylint: disable=g-import-not-at-top
    layout = train_step.state_layout(cfg, model, mesh)
    abstract_params = models.abstract_params(model, cfg.model)
    shardings = layout.full_shardings
  state_dir = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR / str(step) / STATE_ITEM
  params = _restore_params(state_dir, abstract_params, shardings)
  if mesh is None:
    params = jax.device_put(params)
  return model, params, cfg, data.make_tokenizer(cfg.data)


def load_from_hf(folder: str):
  """(model, params, model_cfg, tokenizer) of a local Hugging Face folder with a tokenizer.json."""
  # pylint: disable=g-import-not-at-top
  from llm_jax import convert
  from llm_jax.data.hf_tokenizer import HFTokenizer
  # pylint: enable=g-import-not-at-top

  if not os.path.isdir(folder):
    raise FileNotFoundError(f"Hugging Face model folder {folder!r} does not exist")
  for name in ("config.json", "tokenizer.json"):
    if not os.path.isfile(os.path.join(folder, name)):
      raise FileNotFoundError(f"Hugging Face model folder {folder!r} has no {name}")
  model, params, model_cfg = convert.from_hf(folder)
  tokenizer = HFTokenizer(os.path.join(folder, "tokenizer.json"))
  return model, jax.device_put(params), model_cfg, tokenizer
