"""Runs harness tasks on one model: builds each item's (k-shot, optionally chat) prompt, scores or
generates, and aggregates the metrics with their standard errors."""

import dataclasses
import math
import time

import numpy as np
import tqdm

from llm_jax.evaluation.harness import builtin
from llm_jax.evaluation.harness import fewshot
from llm_jax.evaluation.harness import generation
from llm_jax.evaluation.harness import loglikelihood
from llm_jax.evaluation.harness import multiple_choice
from llm_jax.evaluation.harness import perplexity
from llm_jax.evaluation.harness.task import Task, TaskError


@dataclasses.dataclass
class HarnessOptions:
  num_fewshot: int = 0
  seed: int = 1234
  limit: int | None = None  # evaluate the first `limit` items of each task
  batch_size: int = 16
  chat_template: str | None = None  # a chat template file / folder, or 'builtin'
  keep_records: bool = True


def _chat_wrapper(path: str | None, tokenizer):
  """context -> the context as a user turn of the chat template, ready for the answer."""
  if not path:
    return lambda context: context
  from llm_jax.data import chat_templates  # pylint: disable=g-import-not-at-top
  template = (chat_templates.ChatTemplate(chat_templates.BUILTIN_CHAT_TEMPLATE)
              if path == "builtin" else chat_templates.load_chat_template(path))
  variables = {}
  for key, token_id in (("bos_token", tokenizer.specials.bos_id),
                        ("eos_token", tokenizer.specials.eos_id)):
    if token_id is not None and (text := tokenizer.decode([token_id])):
      variables[key] = text
  variables.update(template.special_tokens)
  return lambda context: chat_templates.render_chat(
      template.source, [{"role": "user", "content": context}], True, **variables)


def _stderr(values: list[float]) -> float:
  """Standard error of the mean (sample standard deviation / sqrt n), as lm-eval reports."""
  if len(values) < 2:
    return float("nan")
  return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def task_contexts(task: Task, docs, options: HarnessOptions, wrap=lambda c: c) -> list[str]:
  fewshot_docs = None
  if options.num_fewshot:
    if task.fewshot_split is None:
      raise TaskError(f"{task.where}: --num_fewshot={options.num_fewshot} but the task has no "
                      "fewshot_split")
    fewshot_docs = task.docs(task.fewshot_split)
  return [wrap(fewshot.build_context(task, doc, i, options.num_fewshot, options.seed,
                                     fewshot_docs)) for i, doc in enumerate(docs)]


def run_task(task: Task, model, params, model_cfg, tokenizer, options: HarnessOptions) -> dict:
  docs = list(task.docs(task.eval_split))
  if options.limit:
    docs = docs[:options.limit]
  if not docs:
    raise TaskError(f"{task.where}: split {task.eval_split!r} has no documents")
  start = time.perf_counter()
  warnings = []
  if task.output_type == "generate_until":
    contexts = task_contexts(task, docs, options, _chat_wrapper(options.chat_template, tokenizer))
    generator = generation.Generator(model, params, model_cfg, tokenizer,
                                     batch_size=min(options.batch_size, len(docs)),
                                     seed=options.seed)
    records, per_item = generation.evaluate_generation(task, docs, contexts, generator)
    truncated = generator.truncated
  else:
    scorer = loglikelihood.LoglikelihoodScorer(model, params, model_cfg, tokenizer,
                                               batch_size=options.batch_size)
    if task.output_type == "multiple_choice":
      contexts = task_contexts(task, docs, options,
                               _chat_wrapper(options.chat_template, tokenizer))
      records, per_item = multiple_choice.evaluate_multiple_choice(task, docs, contexts, scorer)
    else:
      if options.num_fewshot:
        warnings.append(f"{task.name}: rolling perplexity ignores --num_fewshot")
      records, per_item = perplexity.evaluate_rolling(task, docs, scorer)
    truncated = scorer.truncated
  seconds = time.perf_counter() - start
  if truncated:
    warnings.append(f"{task.name}: {truncated} request(s) longer than the model's context "
                    f"(max_len={model_cfg.max_len}) were cut from the left")
  return {"output_type": task.output_type, "source": task.source, "num_items": len(docs),
          "num_fewshot": options.num_fewshot,
          "metrics": {m: float(np.mean(v)) for m, v in per_item.items()},
          "stderr": {m: _stderr(v) for m, v in per_item.items()},
          "truncated": truncated, "seconds": seconds, "items_per_s": len(docs) / seconds,
          "warnings": warnings, **({"records": records} if options.keep_records else {})}


def run_tasks(task_names, model, params, model_cfg, tokenizer, options: HarnessOptions) -> dict:
  """{'tasks': {name: results}, 'warnings': [...]} for every task (names or task-file paths)."""
  tasks = [builtin.get_task(name) if isinstance(name, str) else name for name in task_names]
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise TaskError(f"task names repeat: {names}")
  results, warnings = {}, []
  for task in tqdm.tqdm(tasks, desc="tasks", unit="task", disable=len(tasks) < 2):
    results[task.name] = run_task(task, model, params, model_cfg, tokenizer, options)
    warnings += results[task.name]["warnings"]
  return {"tasks": results, "warnings": warnings}
