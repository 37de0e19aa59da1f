"""Built-in tasks on generated data (offline, the same documents on every machine), and lookup.

  arithmetic_mc        "Question: What is 3 plus 4?\nAnswer:" with four numbers to choose from
  arithmetic_gen       the same questions answered by generation; the first integer is the answer
  counting_perplexity  rolling-window perplexity of documents counting upwards in words
"""

import os

import numpy as np

from llm_jax.evaluation.harness import task_file
from llm_jax.evaluation.harness.task import Task, TaskError

NUM_DOCS = {"train": 32, "test": 48}
_SEEDS = {"train": 1, "test": 2}
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                 "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()


def arithmetic_docs(split: str) -> list[dict]:
  """Sums a + b (a, b < 10) with the answer and three distinct wrong numbers near it."""
  if split not in _SEEDS:
    raise TaskError(f"built-in arithmetic tasks have splits {sorted(_SEEDS)}, not {split!r}")
  rng = np.random.default_rng(_SEEDS[split])
  docs = []
  for i in range(NUM_DOCS[split]):
    a, b = (int(x) for x in rng.integers(0, 10, 2))
    wrong = [int(w) for w in rng.permutation([a + b + d for d in (-3, -2, -1, 1, 2, 3, 10)])[:3]]
    choices = wrong + [a + b]
    order = rng.permutation(4)
    docs.append({"question": f"What is {a} plus {b}?", "a": a, "b": b,
                 "choices": [str(choices[j]) for j in order],
                 "label": int(np.argmax(order == 3)), "answer": str(a + b),
                 "_where": f"arithmetic/{split}[{i}]"})
  return docs


def counting_docs(split: str) -> list[dict]:
  if split not in _SEEDS:
    raise TaskError(f"counting_perplexity has splits {sorted(_SEEDS)}, not {split!r}")
  rng = np.random.default_rng(_SEEDS[split] + 10)
  docs = []
  for i in range(NUM_DOCS[split] // 4):
    start, length = int(rng.integers(0, 10)), int(rng.integers(8, 40))
    words = [_NUMBER_WORDS[(start + j) % len(_NUMBER_WORDS)] for j in range(length)]
    docs.append({"text": " ".join(words).capitalize() + ".", "_where": f"counting/{split}[{i}]"})
  return docs


def _builtin_tasks() -> dict[str, Task]:
  question = "Question: {{question}}\nAnswer:"
  return {
      "arithmetic_mc": Task(name="arithmetic_mc", output_type="multiple_choice",
                            docs=arithmetic_docs, doc_to_text=question,
                            doc_to_choice="{{choices}}", doc_to_target="{{label}}"),
      "arithmetic_gen": Task(name="arithmetic_gen", output_type="generate_until",
                             docs=arithmetic_docs, doc_to_text=question,
                             doc_to_target="{{answer}}", until=("\n",), max_new_tokens=8,
                             answer_regex=r"(-?\d+)", metrics=("exact_match",)),
      "counting_perplexity": Task(name="counting_perplexity", output_type="loglikelihood_rolling",
                                  docs=counting_docs, doc_to_target="{{text}}",
                                  fewshot_split=None),
  }


BUILTIN_TASKS = tuple(_builtin_tasks())


def get_task(name_or_path: str) -> Task:
  """A built-in task by name, or the task of a .yaml / .yml / .py task file."""
  if name_or_path.endswith((".yaml", ".yml", ".py")) or os.sep in name_or_path:
    return task_file.load_task_file(name_or_path)
  tasks = _builtin_tasks()
  if name_or_path not in tasks:
    raise TaskError(f"unknown task {name_or_path!r}; built-in tasks: {list(tasks)} (or give the "
                    "path of a .yaml / .py task file)")
  return tasks[name_or_path]
