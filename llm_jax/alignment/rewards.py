"""Rewards of completions: Python functions or a trained reward model.

  'arithmetic_exact_match'    1.0 when the completion is the row's 'answer' (data/arithmetic.py)
  'python:module:function'    function(completion: str, example: dict) -> float
  'model:WORKDIR'             a run of task.name='reward_model': the last-token scalar head
                              (class_logits[:, 0]) on prompt + completion

A reward that raises or is not a finite number stops the run with a RewardError naming the
prompt (its index in the prompt set) and the completion; no checkpoint is written for that
iteration, so the last good one is kept.
"""

import importlib
from typing import Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.data import arithmetic

BUILTIN = {"arithmetic_exact_match": lambda completion, example: arithmetic.exact_match(
    completion, example["answer"])}


class RewardError(RuntimeError):
  """A reward function raised, or returned something that is not a finite number."""


class Reward(Protocol):

  def __call__(self, completions: list[str], examples: list[dict],
               token_rows: list[list[int]]) -> np.ndarray:
    """Rewards [B] of completions (text), their prompts' rows and prompt + completion ids."""


def _where(prompt_index: int, example: dict, completion: str) -> str:
  return f"prompt {prompt_index} ({example.get('prompt', '')!r}), completion {completion!r}"


class FunctionReward:
  """A per-example Python reward function."""

  def __init__(self, fn: Callable[[str, dict], float], name: str):
    self._fn, self.name = fn, name

  def __call__(self, completions, examples, token_rows, prompt_indices=None):
    del token_rows
    prompt_indices = range(len(completions)) if prompt_indices is None else prompt_indices
    rewards_B = np.zeros(len(completions), np.float32)
    for b, (completion, example, index) in enumerate(zip(completions, examples, prompt_indices)):
      try:
        value = self._fn(completion, example)
      except Exception as e:  # pylint: disable=broad-except
        raise RewardError(f"reward {self.name!r} raised on {_where(index, example, completion)}: "
                          f"{type(e).__name__}: {e}") from e
      try:
        value = float(value)
      except (TypeError, ValueError) as e:
        raise RewardError(f"reward {self.name!r} returned {value!r}, not a number, on "
                          f"{_where(index, example, completion)}") from e
      if not np.isfinite(value):
        raise RewardError(f"reward {self.name!r} returned {value} on "
                          f"{_where(index, example, completion)}")
      rewards_B[b] = value
    return rewards_B


class ModelReward:
  """The scalar head of a reward-model workdir on prompt + completion rows (right-padded)."""

  def __init__(self, workdir: str, mesh=None, rules=None):
    from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
    self.name = f"model:{workdir}"
    self._model, self._params, cfg, _ = load.load_from_workdir(workdir, mesh=mesh)
    if not cfg.model.get("num_labels"):
      raise ValueError(f"alignment.reward={self.name!r}: the model has no scalar head "
                       "(train it with task.name='reward_model', model.num_labels=1)")
    self._mesh, self._rules = mesh, rules
    model = self._model
    self._score = jax.jit(lambda params, tokens, segments: model.apply(
        {"params": params}, tokens, input_segment_ids=segments,
        deterministic=True)["class_logits"][:, 0])

  def __call__(self, completions, examples, token_rows, prompt_indices=None):
    from llm_jax import decoding, sharding  # pylint: disable=g-import-not-at-top
    tokens_BxS, segments_BxS = decoding.right_pad(token_rows, pad_id=0)
    args = (self._params, jnp.asarray(tokens_BxS), jnp.asarray(segments_BxS))
    if self._mesh is None:
      rewards_B = self._score(*args)
    else:
      with sharding.mesh_context(self._mesh, self._rules):
        rewards_B = self._score(*args)
    rewards_B = np.asarray(jax.device_get(rewards_B), np.float32)
    prompt_indices = range(len(completions)) if prompt_indices is None else prompt_indices
    for b in np.flatnonzero(~np.isfinite(rewards_B)):
      raise RewardError(f"reward {self.name!r} returned {rewards_B[b]} on "
                        f"{_where(list(prompt_indices)[b], examples[b], completions[b])}")
    return rewards_B


def make_reward(spec: str, mesh=None, rules=None):
  """The reward of alignment.reward."""
  if spec in BUILTIN:
    return FunctionReward(BUILTIN[spec], spec)
  kind, _, rest = spec.partition(":")
  if kind == "python":
    module_name, _, function_name = rest.rpartition(":")
    if not module_name or not function_name:
      raise ValueError(f"alignment.reward={spec!r}: expected 'python:module:function'")
    try:
      fn = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"alignment.reward={spec!r}: cannot load {module_name}.{function_name}: "
                       f"{e}") from e
    return FunctionReward(fn, spec)
  if kind == "model" and rest:
    return ModelReward(rest, mesh, rules)
  raise ValueError(f"alignment.reward={spec!r}: expected one of {sorted(BUILTIN)}, "
                   "'python:module:function' or 'model:WORKDIR'")
