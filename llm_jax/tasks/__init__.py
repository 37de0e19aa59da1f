"""Tasks: what a run learns. Each task module holds its loss; `make_task(cfg)` picks the one of
`config.task.name` for the train and eval steps."""

from llm_jax.tasks.base import Task
from llm_jax.tasks.classification import Classification, Regression
from llm_jax.tasks.config import NAMES, default_task_config
from llm_jax.tasks.language_modeling import LanguageModeling
from llm_jax.tasks.preference import DirectPreference, RewardModel
from llm_jax.tasks import policy_gradient


def make_task(cfg) -> Task:
  """The task of the experiment config `cfg` (its task, optimizer and objective sections)."""
  task_cfg = cfg.get("task")
  name = "pretrain" if task_cfg is None else task_cfg.name
  if name not in NAMES:
    raise ValueError(f"config.task.name={name!r}: expected one of {NAMES}")
  if cfg.get("distill") is not None and cfg.distill.get("teacher"):
    from llm_jax.tasks import distillation  # pylint: disable=g-import-not-at-top
    return distillation.make(cfg)
  if name == "classification":
    return Classification()
  if name == "regression":
    return Regression()
  if name == "reward_model":
    return RewardModel()
  if name in ("dpo", "ipo", "simpo", "orpo"):
    return DirectPreference(name=name, beta=float(task_cfg.beta),
                            label_smoothing=float(task_cfg.label_smoothing),
                            simpo_gamma=float(task_cfg.simpo_gamma))
  if name in policy_gradient.NAMES:
    return policy_gradient.make(cfg)
  objective = cfg.get("objective")
  nsp = name == "pretrain" and objective is not None and bool(objective.get("nsp", False))
  return LanguageModeling(name=name, z_loss=float(cfg.optimizer.get("z_loss", 0.0)), nsp=nsp)


__all__ = ["Classification", "DirectPreference", "LanguageModeling", "NAMES", "Regression",
           "RewardModel", "Task",
           "default_task_config", "make_task"]
