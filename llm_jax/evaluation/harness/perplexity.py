"""Rolling-window perplexity of whole documents, normalised as lm-evaluation-harness' wikitext
task reports it: word_perplexity = exp(-sum ll / sum words) (words: re.split(r'\\s+', doc)),
byte_perplexity = exp(-sum ll / sum UTF-8 bytes), bits_per_byte = -sum ll / sum bytes / ln 2."""

import math
import re
from collections.abc import Sequence

from llm_jax.evaluation.harness.task import Task


def count_words(text: str) -> int:
  return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
  return len(text.encode("utf-8"))


def perplexity_metrics(log_likelihoods: Sequence[float], texts: Sequence[str]) -> dict[str, float]:
  total = float(sum(log_likelihoods))
  words = sum(count_words(t) for t in texts)
  utf8_bytes = sum(count_bytes(t) for t in texts)
  return {"word_perplexity": math.exp(-total / words),
          "byte_perplexity": math.exp(-total / utf8_bytes),
          "bits_per_byte": -total / utf8_bytes / math.log(2)}


def evaluate_rolling(task: Task, docs: Sequence[dict], scorer) -> tuple[list[dict], dict]:
  texts = [task.target_text(doc) for doc in docs]
  lls = scorer.rolling_loglikelihood(texts)
  metrics = perplexity_metrics(lls, texts)
  records = [{"doc": doc.get("_where"), "log_likelihood": float(ll), "words": count_words(t),
              "bytes": count_bytes(t)} for doc, ll, t in zip(docs, lls, texts)]
  return records, {m: [metrics[m]] for m in task.metrics}
