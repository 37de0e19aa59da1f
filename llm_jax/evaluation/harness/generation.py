"""Generation tasks: greedy or sampled continuations through the KV-cache decoder, cut at the
first stop sequence, the answer extracted by regex, then exact match / BLEU / ROUGE.

Prompts longer than the model's context less max_new_tokens are cut from the left (counted).
"""

import re
from collections.abc import Sequence

import jax
import numpy as np

from llm_jax import decoding
from llm_jax.evaluation import task_metrics
from llm_jax.evaluation import text_metrics
from llm_jax.evaluation.harness.task import Task


def cut_at_stop(text: str, until: Sequence[str]) -> str:
  """The text before the earliest stop sequence."""
  end = len(text)
  for stop in until:
    if stop and (found := text.find(stop)) >= 0:
      end = min(end, found)
  return text[:end]


def extract_answer(text: str, pattern: str | None) -> str:
  """Group 1 of the first match (the whole match without groups); the stripped text without a
  pattern; '' when the pattern does not match."""
  if pattern is None:
    return text.strip()
  match = re.search(pattern, text)
  if match is None:
    return ""
  return (match.group(1) if match.groups() else match.group(0)).strip()


class Generator:
  """Batched continuations of text prompts; `truncated` counts prompts cut to fit."""

  def __init__(self, model, params, model_cfg, tokenizer, *, batch_size: int = 8, seed: int = 0):
    if model_cfg.family not in ("decoder", "encoder_decoder"):
      raise ValueError(f"generation tasks need a decoder or encoder_decoder model, got "
                       f"model.family={model_cfg.family!r}")
    self.model, self.params, self.model_cfg, self.tokenizer = model, params, model_cfg, tokenizer
    self.batch_size, self.rng = batch_size, jax.random.key(seed)
    self.truncated = 0
    self.tokens_generated = 0

  def _prompt_ids(self, text: str, max_new_tokens: int) -> list[int]:
    cfg, specials = self.model_cfg, self.tokenizer.specials
    ids = self.tokenizer.encode(text)
    if cfg.family == "encoder_decoder":
      ids, limit = ids + ([specials.eos_id] if specials.eos_id is not None else []), cfg.max_len
    else:
      ids = ids or [specials.bos_id if specials.bos_id is not None else specials.eos_id]
      limit = cfg.max_len - max_new_tokens
    if limit < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                       f"model's max_len={cfg.max_len}")
    if len(ids) > limit:
      self.truncated += 1
      ids = ids[-limit:]
    return ids

  def generate(self, prompts: Sequence[str], task: Task) -> list[str]:
    cfg, specials = self.model_cfg, self.tokenizer.specials
    max_new_tokens = min(task.max_new_tokens, cfg.max_len - 1)
    rows = [self._prompt_ids(p, max_new_tokens) for p in prompts]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    texts = [""] * len(rows)
    for start in range(0, len(rows), self.batch_size):
      chunk = order[start:start + self.batch_size]
      batch = [rows[i] for i in chunk]
      batch += [batch[-1]] * (self.batch_size - len(batch))  # one compiled shape per length
      self.rng, rng = jax.random.split(self.rng)
      generation = decoding.generate(
          self.model, self.params, batch, max_new_tokens=max_new_tokens,
          method="sample" if task.do_sample else "greedy", temperature=task.temperature,
          eos_id=specials.eos_id, pad_id=specials.pad_id, rng=rng,
          prefix_lm=cfg.family == "decoder" and cfg.get("attention") == "prefix",
          vocab_limit=min(self.tokenizer.vocab_size, cfg.vocab_size))
      tokens_BxN = np.asarray(jax.device_get(generation.tokens))
      for i, tokens in zip(chunk, tokens_BxN):
        ids = [int(t) for t in tokens]
        if specials.eos_id is not None and specials.eos_id in ids:
          ids = ids[:ids.index(specials.eos_id)]
        self.tokens_generated += len(ids)
        texts[i] = cut_at_stop(self.tokenizer.decode(ids), task.until)
    return texts


def evaluate_generation(task: Task, docs: Sequence[dict], contexts: Sequence[str],
                        generator: Generator) -> tuple[list[dict], dict[str, list[float]]]:
  outputs = generator.generate(contexts, task)
  predictions = [extract_answer(o, task.answer_regex) for o in outputs]
  references = []
  for doc in docs:
    target = task.target_text(doc)
    extracted = extract_answer(target, task.answer_regex)
    references.append(extracted if extracted else target.strip())
  per_item = {}
  if "exact_match" in task.metrics:
    per_item["exact_match"] = [task_metrics.exact_match([p], [r])
                               for p, r in zip(predictions, references)]
  overlap = [m for m in task.metrics if m != "exact_match"]
  corpus = text_metrics.text_metrics(predictions, references) if overlap else {}
  records = [{"doc": doc.get("_where"), "context": c, "output": o, "prediction": p,
              "reference": r} for doc, c, o, p, r in zip(docs, contexts, outputs, predictions,
                                                         references)]
  return records, {**per_item, **{m: [corpus[m]] for m in overlap}}
