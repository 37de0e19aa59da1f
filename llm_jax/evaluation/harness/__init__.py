"""Evaluation harness: multiple-choice, generation and rolling-perplexity tasks (k-shot), their
task files and benchmark readers, efficiency, and the results report."""

from llm_jax.evaluation.harness.builtin import BUILTIN_TASKS, get_task
from llm_jax.evaluation.harness.loglikelihood import LoglikelihoodScorer, rolling_windows
from llm_jax.evaluation.harness.runner import HarnessOptions, run_task, run_tasks
from llm_jax.evaluation.harness.task import Task, TaskError

__all__ = ["BUILTIN_TASKS", "HarnessOptions", "LoglikelihoodScorer", "Task", "TaskError",
           "get_task", "rolling_windows", "run_task", "run_tasks"]
