"""Evaluation of fine-tuning tasks with a model: cloze scoring and generation metrics.

Called from the training loop every `eval_every` steps; both reuse compiled programs across
calls (the scoring step is cached per model, `decoding.generate` is jitted per shape).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from llm_jax import decoding
from llm_jax.evaluation import scoring
from llm_jax.evaluation import task_metrics
from llm_jax.evaluation import text_metrics


@functools.lru_cache(maxsize=8)
def _cached_score_fn(model: nn.Module, family: str) -> Callable[[Any, dict], jax.Array]:
  return scoring.make_score_fn(model, family)


def _score_fn(model: nn.Module, family: str) -> Callable[[Any, dict], jax.Array]:
  """One jitted scoring step per (model, family), so repeated evals do not recompile."""
  try:
    return _cached_score_fn(model, family)
  except TypeError:  # An unhashable module: a fresh step.
    return scoring.make_score_fn(model, family)


def _token_list(row, name: str) -> list[int]:
  if isinstance(row, (str, bytes)):
    raise ValueError(f"{name} must be a list of token ids, got a {type(row).__name__}")
  tokens = [int(t) for t in np.asarray(row).reshape(-1)]
  if not tokens:
    raise ValueError(f"{name} has no tokens")
  return tokens


def cloze_predictions(model: nn.Module, params: Any, family: str,
                      prompts: Sequence[Sequence[int]],
                      candidates: Sequence[Sequence[Sequence[int]]], pad_id: int,
                      batch_size: int = 8, *, decoder_start_id: int | None = None,
                      max_length: int | None = None,
                      score_fn: Callable[[Any, dict], jax.Array] | None = None) -> np.ndarray:
  """[N, num_candidates] log-likelihoods of candidates[i][c] as the continuation of prompts[i].

  Each is the sum of the log-probabilities of the candidate's tokens only. decoder: the
  candidate follows the prompt (whose first token, e.g. BOS, is context, never scored);
  encoder_decoder: the prompt is the encoder input and the candidate the decoder side,
  started from `decoder_start_id` (default: the model's decoder_start_token_id). Every
  example needs the same number of candidates. `max_length` and `score_fn` are as in
  `scoring.sequence_log_likelihoods`.
  """
  if family not in ("decoder", "encoder_decoder"):
    raise ValueError(f"cloze scoring needs a decoder or encoder_decoder model, got "
                     f"family={family!r}")
  if isinstance(prompts, (str, bytes)) or len(prompts) != len(candidates):
    raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
  if not prompts:
    raise ValueError("prompts is empty")
  prompt_rows = [_token_list(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
  candidate_rows = []
  for i, options in enumerate(candidates):
    if isinstance(options, (str, bytes)) or not isinstance(options, (Sequence, np.ndarray)):
      raise ValueError(f"candidates[{i}] must be a list of token-id lists")
    candidate_rows.append([_token_list(c, f"candidates[{i}][{k}]")
                           for k, c in enumerate(options)])
  num_candidates = len(candidate_rows[0])
  for i, options in enumerate(candidate_rows):
    if len(options) != num_candidates or not options:
      raise ValueError(f"candidates[{i}] has {len(options)} candidates, candidates[0] "
                       f"{num_candidates}; every example needs the same (positive) number")

  pairs = [(p, c) for p, options in zip(prompt_rows, candidate_rows) for c in options]
  score_fn = score_fn or _score_fn(model, family)
  if family == "decoder":
    scores = scoring.sequence_log_likelihoods(
        model, params, [p + c for p, c in pairs], family=family, batch_size=batch_size,
        pad_id=pad_id, max_length=max_length, score_fn=score_fn)
  else:
    if decoder_start_id is None:
      decoder_start_id = model.cfg.decoder_start_token_id
    scores = scoring.sequence_log_likelihoods(
        model, params, [p for p, _ in pairs], target_rows=[c for _, c in pairs], family=family,
        batch_size=batch_size, pad_id=pad_id, decoder_start_id=decoder_start_id,
        max_length=max_length, score_fn=score_fn)
  # A decoder row scores prompt[1:] + candidate; keep the candidate's tokens.
  log_likelihoods = [np.sum(s.token_log_probs[-len(c):], dtype=np.float64)
                     for s, (_, c) in zip(scores, pairs)]
  return np.asarray(log_likelihoods, np.float64).reshape(len(prompt_rows), num_candidates)


def cloze_metrics(model: nn.Module, params: Any, family: str, prompts, candidates, labels,
                  pad_id: int, batch_size: int = 8, *, weights=None,
                  **kwargs) -> dict[str, float]:
  """{'accuracy', 'macro_f1', 'num_examples'} of the most likely candidate against labels.

  labels[i] is the index of the right candidate of example i; `kwargs` go to
  `cloze_predictions`.
  """
  log_likelihoods = cloze_predictions(model, params, family, prompts, candidates, pad_id,
                                      batch_size, **kwargs)
  labels = np.asarray(labels)
  if labels.shape != (len(log_likelihoods),):
    raise ValueError(f"labels has shape {labels.shape}, expected ({len(log_likelihoods)},)")
  metrics = task_metrics.classification_metrics(
      np.argmax(log_likelihoods, axis=-1), labels, weights=weights,
      num_labels=log_likelihoods.shape[1])
  return {**metrics, "num_examples": len(log_likelihoods)}


def _text_until_eos(tokenizer, tokens, eos_id: int | None) -> str:
  ids = [int(t) for t in tokens]
  if eos_id is not None and eos_id in ids:
    ids = ids[:ids.index(eos_id)]
  return tokenizer.decode(ids)


def generate_texts(model: nn.Module, params: Any, model_cfg, tokenizer,
                   prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   batch_size: int = 8) -> list[str]:
  """Greedy continuations of `prompts` (decoder) or outputs for them (encoder-decoder), as text.

  Rows are generated `batch_size` at a time (the last batch is filled with copies, so every
  call has batch_size rows) and decoded up to the first EOS.
  """
  family = model_cfg.family
  if family not in ("decoder", "encoder_decoder"):
    raise ValueError(f"generation needs a decoder or encoder_decoder model, got "
                     f"family={family!r}")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  rows = [_token_list(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
  for i, row in enumerate(rows):
    if family == "decoder" and len(row) + max_new_tokens > model_cfg.max_len:
      raise ValueError(f"prompts[{i}] has {len(row)} tokens; with max_new_tokens="
                       f"{max_new_tokens} that exceeds the model's max_len={model_cfg.max_len}")
    if family == "encoder_decoder" and len(row) > model_cfg.max_len:
      raise ValueError(f"prompts[{i}] has {len(row)} tokens, more than the model's "
                       f"max_len={model_cfg.max_len}")
  specials = tokenizer.specials
  texts = []
  for start in range(0, len(rows), batch_size):
    batch = rows[start:start + batch_size]
    filled = batch + [batch[-1]] * (batch_size - len(batch))
    generation = decoding.generate(
        model, params, filled, max_new_tokens=max_new_tokens, method="greedy",
        eos_id=specials.eos_id, pad_id=specials.pad_id,
        prefix_lm=family == "decoder" and model_cfg.attention == "prefix",
        vocab_limit=min(tokenizer.vocab_size, model_cfg.vocab_size))
    tokens_BxN = np.asarray(jax.device_get(generation.tokens))
    texts.extend(_text_until_eos(tokenizer, t, specials.eos_id) for t in tokens_BxN[:len(batch)])
  return texts


def generation_metrics(model: nn.Module, params: Any, model_cfg, tokenizer,
                       examples: Sequence[tuple[Sequence[int], Any]], max_new_tokens: int,
                       batch_size: int = 8, num_samples: int = 3) -> dict[str, Any]:
  """Exact match, BLEU (0-100) and ROUGE-1/2/L F (0-1) of greedy outputs against references.

  examples: (prompt token ids, reference text) pairs; the prompt is what the model
  continues (decoder) or its encoder input (encoder-decoder), a reference a string or a
  list of alternatives. Returns the metrics, 'num_examples' and 'samples': the first
  `num_samples` (prediction, reference) pairs.
  """
  if isinstance(examples, (str, bytes)) or not examples:
    raise ValueError("examples must be a non-empty list of (prompt ids, reference) pairs")
  for i, example in enumerate(examples):
    if not isinstance(example, (tuple, list)) or len(example) != 2:
      raise ValueError(f"examples[{i}] must be a (prompt ids, reference) pair")
  prompts = [prompt for prompt, _ in examples]
  references = [reference for _, reference in examples]
  predictions = generate_texts(model, params, model_cfg, tokenizer, prompts, max_new_tokens,
                               batch_size)
  return {"exact_match": task_metrics.exact_match(predictions, references),
          **text_metrics.text_metrics(predictions, references),
          "num_examples": len(predictions),
          "samples": list(zip(predictions, references))[:num_samples]}
