"""Log-likelihoods of (context, continuation) text pairs and of whole documents, batched through
one jitted scoring function.

Tokenization follows lm-evaluation-harness' causal models: trailing spaces of the context move
to the continuation, the pair is encoded whole and the continuation is what follows the
context's own tokens; an empty context becomes the prefix token (BOS, else EOS). Rows longer
than the model's context are cut from the left (counted in `truncated`). Rolling documents are
split into lm-eval's disjoint windows of max_length tokens (context_len=1).
"""

from collections.abc import Sequence

import numpy as np

from llm_jax.evaluation import scoring
from llm_jax.evaluation import task_eval


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_length: int
                    ) -> list[tuple[list[int], list[int]]]:
  """(context, continuation) windows predicting every token once; lm-eval's
  get_rolling_token_windows(context_len=1) followed by make_disjoint_window."""
  tokens = list(tokens)
  windows = []
  if not tokens:
    return windows
  first = min(max_length, len(tokens))
  windows.append(([prefix_token] + tokens[:first - 1], tokens[:first]))
  predicted = first
  while predicted < len(tokens):
    length = min(len(tokens) - predicted, max_length)
    end = predicted + length
    windows.append((tokens[max(end - max_length - 1, 0):end - 1], tokens[end - length:end]))
    predicted += length
  return [(context[:len(context) - (len(continuation) - 1)], continuation)
          for context, continuation in windows]


class LoglikelihoodScorer:
  """Scores requests for one model; `truncated` counts rows cut to fit its context."""

  def __init__(self, model, params, model_cfg, tokenizer, *, batch_size: int = 16,
               max_length: int | None = None):
    if model_cfg.family not in ("decoder", "encoder_decoder"):
      raise ValueError(f"log-likelihood tasks need a decoder or encoder_decoder model, got "
                       f"model.family={model_cfg.family!r}")
    self.model, self.params, self.model_cfg, self.tokenizer = model, params, model_cfg, tokenizer
    self.family = model_cfg.family
    self.batch_size = batch_size
    self.max_length = max_length or model_cfg.max_len
    specials = tokenizer.specials
    self.prefix_token = specials.bos_id if specials.bos_id is not None else specials.eos_id
    self.score_fn = task_eval._score_fn(model, self.family)  # pylint: disable=protected-access
    self.truncated = 0
    self.tokens_scored = 0

  def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    encode = self.tokenizer.encode
    if not context:
      continuation_ids = encode(continuation)
      if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} has no tokens")
      if self.family == "encoder_decoder" or self.prefix_token != continuation_ids[0]:
        return [self.prefix_token], continuation_ids
      return continuation_ids[:1], continuation_ids[1:]
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    if self.family == "encoder_decoder":
      return encode(context), encode(continuation)
    whole, context_ids = encode(context + continuation), encode(context)
    return context_ids, whole[len(context_ids):]

  def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """[N] float64 log-likelihood of each continuation given its context."""
    return self.token_loglikelihoods([self.encode_pair(c, x) for c, x in pairs])

  def token_loglikelihoods(self, pairs: Sequence[tuple[list[int], list[int]]]) -> np.ndarray:
    if not pairs:
      return np.zeros((0,), np.float64)
    for i, (_, continuation) in enumerate(pairs):
      if not continuation:
        raise ValueError(f"request {i}: the continuation has no tokens")
    # Longest first, so each batch pads to about its own length (lm-eval sorts the same way).
    order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
    results = np.zeros((len(pairs),), np.float64)
    rows, kept = self._rows([pairs[i] for i in order])
    scores = self._score(rows)
    for i, score, length in zip(order, scores, kept):
      results[i] = np.sum(score.token_log_probs[-length:], dtype=np.float64)
      self.tokens_scored += length
    return results

  def _rows(self, pairs):
    """Model rows of each pair, cut from the left, and how many continuation tokens each scores."""
    limit, rows, kept = self.max_length, [], []
    eos = self.tokenizer.specials.eos_id
    for context, continuation in pairs:
      if self.family == "decoder":
        whole = list(context) + list(continuation)
        if len(whole) > limit + 1:
          self.truncated += 1
          whole = whole[-(limit + 1):]
        rows.append(whole)
        kept.append(min(len(continuation), len(whole) - 1))
      else:
        source = list(context) + ([eos] if eos is not None else [])
        if len(source) > limit or len(continuation) > limit:
          self.truncated += 1
        rows.append((source[-limit:], list(continuation)[-limit:]))
        kept.append(min(len(continuation), limit))
    return rows, kept

  def _score(self, rows) -> list[scoring.SequenceScore]:
    pad_id = self.tokenizer.specials.pad_id
    if self.family == "decoder":
      return scoring.sequence_log_likelihoods(
          self.model, self.params, rows, family="decoder", batch_size=self.batch_size,
          pad_id=pad_id, score_fn=self.score_fn)
    return scoring.sequence_log_likelihoods(
        self.model, self.params, [s for s, _ in rows], target_rows=[t for _, t in rows],
        family="encoder_decoder", batch_size=self.batch_size, pad_id=pad_id,
        decoder_start_id=self.model_cfg.decoder_start_token_id, score_fn=self.score_fn)

  def rolling_loglikelihood(self, texts: Sequence[str]) -> np.ndarray:
    """[N] log-likelihood of each whole document (decoder models)."""
    if self.family != "decoder":
      raise ValueError("rolling perplexity needs a decoder model, got "
                       f"model.family={self.family!r}")
    windows, owner = [], []
    for i, text in enumerate(texts):
      for window in rolling_windows(self.tokenizer.encode(text), self.prefix_token,
                                    self.max_length):
        windows.append(window)
        owner.append(i)
    window_scores = self.token_loglikelihoods(windows)
    return np.bincount(np.asarray(owner, np.int64), window_scores, minlength=len(texts))
