"""The task's own metrics at each evaluation, beside the loss: macro-F1 (classification),
Pearson / Spearman (regression), verbalizer accuracy (cloze), exact match / BLEU / ROUGE of
greedy generations (seq2seq, SFT) on the first task.eval_generate_examples eval examples."""

import jax

from llm_jax.training import train_step as train_step_lib


def task_metrics(cfg, model, state, examples, tokenizer) -> dict[str, float]:
  """{metric: value} for cfg.task.name; `examples` holds the eval steps' per-example arrays."""
  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation import task_metrics as metrics
  # pylint: enable=g-import-not-at-top
  name = cfg.task.name
  if name == "classification":
    found = metrics.classification_metrics(examples["predictions"], examples["targets"],
                                           examples["weights"], cfg.model.num_labels)
    return {"macro_f1": found["macro_f1"]}
  if name == "regression":
    return metrics.regression_metrics(examples["predictions"], examples["targets"],
                                      examples["weights"])
  limit = int(cfg.task.eval_generate_examples)
  if name not in ("cloze", "seq2seq", "sft") or limit <= 0:
    return {}
  if jax.process_count() > 1:
    return {}  # generation-based metrics run on one host's copy of the data
  params = jax.device_get(train_step_lib.full_params(state))
  if name == "cloze":
    return _cloze(cfg, model, params, tokenizer, limit)
  return _generation(cfg, model, params, tokenizer, limit)


def _cloze(cfg, model, params, tokenizer, limit):
  # pylint: disable=g-import-not-at-top
  from llm_jax.data import task_examples
  from llm_jax.data import task_files
  from llm_jax.evaluation import task_eval
  # pylint: enable=g-import-not-at-top
  rows = task_files.read_task_rows(cfg, "validation")
  rows = [rows[i] for i in range(min(limit, len(rows)))]
  prompts, candidates, labels = [], [], []
  for row in rows:
    prompt, options, label = task_examples.cloze_candidates(cfg, tokenizer, row)
    prompts.append(prompt)
    candidates.append(options)
    labels.append(label)
  found = task_eval.cloze_metrics(model, params, cfg.model.family, prompts, candidates, labels,
                                  pad_id=tokenizer.specials.pad_id)
  return {f"cloze_{k}": v for k, v in found.items() if isinstance(v, float)}


def _generation(cfg, model, params, tokenizer, limit):
  # pylint: disable=g-import-not-at-top
  from llm_jax.data import task_examples
  from llm_jax.evaluation import task_eval
  # pylint: enable=g-import-not-at-top
  examples = task_examples.generation_examples(cfg, tokenizer, "validation", limit)
  found = task_eval.generation_metrics(model, params, cfg.model, tokenizer, examples,
                                       max_new_tokens=int(cfg.task.eval_max_new_tokens))
  return {k: float(v) for k, v in found.items()
          if k in ("exact_match", "bleu", "rouge1", "rouge2", "rougeL")}
