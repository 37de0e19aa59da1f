"""Multiple choice by log-likelihood, with lm-evaluation-harness' acc, acc_norm and acc_bytes.

Each choice is scored as the continuation `target_delimiter + choice` of the item's context.
acc: the most likely choice is right; acc_norm: the most likely after dividing each choice's
log-likelihood by its length in characters (len(choice)); acc_bytes: by its UTF-8 length.
"""

from collections.abc import Sequence

import numpy as np

from llm_jax.evaluation.harness.task import Task


def choice_predictions(log_likelihoods: Sequence[float], choices: Sequence[str]) -> dict[str, int]:
  """The index each metric picks (ties: the first, as np.argmax)."""
  lls = np.asarray(log_likelihoods, np.float64)
  characters = np.asarray([float(len(c)) for c in choices])
  utf8_bytes = np.asarray([float(len(c.encode("utf-8"))) for c in choices])
  return {"acc": int(np.argmax(lls)), "acc_norm": int(np.argmax(lls / characters)),
          "acc_bytes": int(np.argmax(lls / utf8_bytes))}


def evaluate_multiple_choice(task: Task, docs: Sequence[dict], contexts: Sequence[str],
                             scorer) -> tuple[list[dict], dict[str, list[float]]]:
  """(one record per item, metric -> per-item scores)."""
  items, requests = [], []
  for doc, context in zip(docs, contexts):
    choices = task.choices(doc)
    items.append((doc, context, choices, task.gold_index(doc, choices)))
    requests += [(context, task.target_delimiter + c) for c in choices]
  lls = scorer.loglikelihoods(requests)
  records, per_item = [], {m: [] for m in task.metrics}
  offset = 0
  for doc, context, choices, gold in items:
    item_lls = lls[offset:offset + len(choices)]
    offset += len(choices)
    picked = choice_predictions(item_lls, choices)
    for metric in task.metrics:
      per_item[metric].append(float(picked[metric] == gold))
    records.append({"doc": doc.get("_where"), "context": context, "choices": choices,
                    "gold": gold, "log_likelihoods": [float(x) for x in item_lls],
                    **{f"pred_{m}": picked[m] for m in task.metrics}})
  return records, per_item
