"""Which parameters train: the trainable / frozen split of the parameter tree, by path regexes.

A parameter's path is its keys joined by '/', e.g. 'decoder/layers_0/mlp/wi/kernel'. The
trainable tree gets gradients and optimizer state; the frozen tree (a frozen base under LoRA,
frozen embeddings or layers) is an input of the train step that neither.
"""

import re

import flax
import jax
import numpy as np

from llm_jax.models.config import PEFT_PARAMS

# The task heads that train beside the peft parameters (the pooler too: an MLM checkpoint has
# none, so it starts new).
TASK_HEADS = r"(^|/)(classifier|pooler)/"


def path_name(path) -> str:
  return "/".join(_key_name(k) for k in path)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def peft_enabled(peft_cfg) -> bool:
  return bool(peft_cfg is not None and (
      peft_cfg.lora_rank or peft_cfg.ia3_targets or peft_cfg.prefix_length
      or peft_cfg.prompt_length or peft_cfg.adapter_size))


def trainable_names(names, opt_cfg, peft_cfg=None) -> set[str]:
  """The trainable subset of parameter path names.

  optimizer.trainable ('' = every parameter, or with a peft method only its parameters and
  the task heads) minus optimizer.frozen. Each regex must match some parameter.
  """
  names = list(names)
  trainable_re = opt_cfg.get("trainable", "")
  frozen_re = opt_cfg.get("frozen", "")
  if not trainable_re and peft_enabled(peft_cfg):
    trainable_re = f"{PEFT_PARAMS}|{TASK_HEADS}"
  chosen = set(names)
  for field, regex in (("optimizer.trainable", trainable_re), ("optimizer.frozen", frozen_re)):
    if not regex:
      continue
    try:
      pattern = re.compile(regex)
    except re.error as e:
      raise ValueError(f"config.{field}={regex!r} is not a valid regex: {e}") from e
    matched = {n for n in names if pattern.search(n)}
    if not matched:
      raise ValueError(f"config.{field}={regex!r} matches no parameter; parameters: "
                       f"{_preview(names)}")
    chosen = chosen & matched if field == "optimizer.trainable" else chosen - matched
  if not chosen:
    raise ValueError("no parameter is trainable: optimizer.frozen removes every parameter "
                     "that optimizer.trainable selects")
  return chosen


def _preview(names, limit=12):
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def flat(tree) -> dict[str, object]:
  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def unflat(flat_tree: dict[str, object]):
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat_tree.items()})


def split(params, trainable: set[str]):
  """(trainable tree, frozen tree) of a nested params dict; frozen may be an empty dict."""
  items = flat(params)
  return (unflat({k: v for k, v in items.items() if k in trainable}),
          unflat({k: v for k, v in items.items() if k not in trainable}))


def merge(trainable, frozen):
  """The whole parameter tree from its two parts."""
  return unflat({**flat(frozen), **flat(trainable)})


def count(tree) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))
