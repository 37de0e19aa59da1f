"""Tasks: what a run learns. Each task names its batch fields and its loss; the train step asks
the registry for the loss of `config.task.name`."""

from llm_jax.tasks.config import NAMES, default_task_config
