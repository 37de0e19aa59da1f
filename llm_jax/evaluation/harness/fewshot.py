"""k-shot prompts: solved examples from the task's few-shot split, then the item's own prompt.

Examples are drawn per item with a generator seeded by (seed, item index), so a prompt does not
depend on which other items are evaluated or in what order; the item itself (same split and
index, or a document with the same prompt) is never among its examples.
"""

from collections.abc import Sequence

import numpy as np

from llm_jax.evaluation.harness.task import Task, TaskError


def fewshot_indices(num_candidates: int, k: int, seed: int, item_index: int,
                    excluded: Sequence[int] = ()) -> list[int]:
  """k distinct indices in [0, num_candidates) outside `excluded`, seeded by (seed, item_index)."""
  allowed = np.setdiff1d(np.arange(num_candidates), np.asarray(excluded, np.int64))
  if k > len(allowed):
    raise TaskError(f"{k}-shot prompts need {k} examples, the few-shot split has "
                    f"{len(allowed)} usable")
  rng = np.random.default_rng([seed, item_index])
  return [int(i) for i in rng.choice(allowed, size=k, replace=False)]


def build_context(task: Task, doc: dict, item_index: int, num_fewshot: int, seed: int,
                  fewshot_docs: Sequence[dict] | None) -> str:
  """The prompt of `doc`: num_fewshot solved examples, each followed by the task's few-shot
  delimiter, then the document's prompt (lm-evaluation-harness' layout)."""
  if num_fewshot == 0:
    return task.text(doc)
  if fewshot_docs is None:
    raise TaskError(f"{task.where}: --num_fewshot={num_fewshot} but the task has no few-shot split")
  same_split = task.fewshot_split == task.eval_split
  prompt = task.text(doc)
  excluded = [j for j, other in enumerate(fewshot_docs)
              if (same_split and j == item_index) or task.text(other) == prompt]
  chosen = fewshot_indices(len(fewshot_docs), num_fewshot, seed, item_index, excluded)
  examples = [task.fewshot_example(fewshot_docs[j]) for j in chosen]
  return task.fewshot_delimiter.join(examples) + task.fewshot_delimiter + prompt
