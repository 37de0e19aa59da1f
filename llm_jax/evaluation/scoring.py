"""Log-likelihoods of token sequences, perplexity and token accuracy over batches; jitted.

Batches follow the batch-dict contract (README, "Architecture"): the model reads the fields in
`models.MODEL_INPUT_FIELDS[family]`, and `targets` / `loss_weights` say what is scored.
"""

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import models
from llm_jax.tasks import losses


@dataclasses.dataclass(frozen=True)
class SequenceScore:
  """Log-probabilities (natural log) of the scored tokens of one sequence."""

  token_log_probs: np.ndarray  # [num_tokens], float32

  @property
  def log_likelihood(self) -> float:
    return float(np.sum(self.token_log_probs, dtype=np.float64))

  @property
  def num_tokens(self) -> int:
    return len(self.token_log_probs)

  @property
  def perplexity(self) -> float:
    return math.exp(-self.log_likelihood / self.num_tokens)


def target_log_probs(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """log softmax(logits)[target] at every position, in float32."""
  log_probs_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def model_logits(model: nn.Module, params: Any, batch: dict, family: str) -> jax.Array:
  """The model's [B, L, V] logits for the fields of `batch` that `family` models read."""
  if family not in models.MODEL_INPUT_FIELDS:
    raise ValueError(f"unknown model family {family!r}; known: {sorted(models.MODEL_INPUT_FIELDS)}")
  inputs = {k: batch[k] for k in models.MODEL_INPUT_FIELDS[family] if k in batch}
  return model.apply({"params": params}, **inputs, deterministic=True)["logits"]


def _family_of(model: nn.Module, family: str | None) -> str:
  if family is not None:
    return family
  config = getattr(model, "config", None) or getattr(model, "cfg", None)
  if config is None or "family" not in config:
    raise ValueError(f"cannot tell the family of {type(model).__name__}; pass family=")
  return config["family"]


def make_score_fn(model: nn.Module, family: str | None = None) -> Callable[[Any, dict], jax.Array]:
  """Jitted (params, batch) -> [B, L] log-probabilities of `targets`."""
  family = _family_of(model, family)
  return jax.jit(lambda params, batch: target_log_probs(
      model_logits(model, params, batch, family), batch["targets"]))


def make_sums_fn(model: nn.Module, family: str | None = None) -> Callable[[Any, dict], dict]:
  """Jitted (params, batch) -> {loss_sum, weight_sum, correct_sum}, like training's eval step."""
  family = _family_of(model, family)

  def sums(params, batch):
    found = losses.cross_entropy(model_logits(model, params, batch, family), batch["targets"],
                                 batch["loss_weights"])
    return {k: found[k] for k in ("loss_sum", "weight_sum", "correct_sum")}

  return jax.jit(sums)


# -- Log-likelihoods of given sequences. ------------------------------------------------------


def _bucket(length: int, minimum: int = 8) -> int:
  """Padded length: the next power of two, so a few shapes cover every batch."""
  return max(minimum, 1 << max(length - 1, 0).bit_length())


def _pad_rows(rows: Sequence[Sequence[int]], num_rows: int, length: int, pad_id: int):
  """[num_rows, length] tokens, segment ids (1 on tokens, 0 on padding) and positions."""
  tokens = np.full((num_rows, length), pad_id, np.int32)
  segment_ids = np.zeros((num_rows, length), np.int32)
  positions = np.zeros((num_rows, length), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
    segment_ids[i, :len(row)] = 1
    positions[i, :len(row)] = np.arange(len(row))
  return tokens, segment_ids, positions


def _check_rows(rows, name: str, min_length: int, max_length: int | None,
                not_fed: int = 0) -> list[list[int]]:
  """Rows as lists of ints; `not_fed` trailing tokens of a row are targets only."""
  if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
    raise ValueError(f"{name} must be a list of token-id lists, got {type(rows).__name__}")
  checked = []
  for i, row in enumerate(rows):
    row = [int(t) for t in np.asarray(row).reshape(-1)]
    if len(row) < min_length:
      raise ValueError(f"{name}[{i}] has {len(row)} tokens; at least {min_length} are needed")
    if max_length is not None and len(row) - not_fed > max_length:
      raise ValueError(f"{name}[{i}] has {len(row)} tokens: {len(row) - not_fed} model inputs, "
                       f"more than max_length={max_length}")
    checked.append(row)
  return checked


def decoder_scoring_batch(rows: Sequence[Sequence[int]], num_rows: int, pad_id: int) -> dict:
  """Decoder-only batch scoring rows[i][1:] given the tokens before each."""
  length = _bucket(max(len(r) - 1 for r in rows))
  inputs, segment_ids, positions = _pad_rows([r[:-1] for r in rows], num_rows, length, pad_id)
  targets, _, _ = _pad_rows([r[1:] for r in rows], num_rows, length, pad_id)
  return {"inputs": inputs, "input_segment_ids": segment_ids, "input_positions": positions,
          "targets": targets, "loss_weights": (segment_ids > 0).astype(np.float32)}


def seq2seq_scoring_batch(rows, target_rows, num_rows: int, pad_id: int,
                          decoder_start_id: int) -> dict:
  """Encoder-decoder batch scoring target_rows[i] given rows[i] as the encoder input."""
  inputs, segment_ids, positions = _pad_rows(rows, num_rows, _bucket(max(map(len, rows))), pad_id)
  length = _bucket(max(map(len, target_rows)))
  decoder_rows = [[decoder_start_id] + t[:-1] for t in target_rows]
  decoder_inputs, decoder_segment_ids, decoder_positions = _pad_rows(
      decoder_rows, num_rows, length, pad_id)
  targets, _, _ = _pad_rows(target_rows, num_rows, length, pad_id)
  return {"inputs": inputs, "input_segment_ids": segment_ids, "input_positions": positions,
          "decoder_inputs": decoder_inputs, "decoder_segment_ids": decoder_segment_ids,
          "decoder_positions": decoder_positions, "targets": targets,
          "loss_weights": (decoder_segment_ids > 0).astype(np.float32)}


def sequence_log_likelihoods(
    model: nn.Module,
    params: Any,
    token_rows: Sequence[Sequence[int]],
    *,
    target_rows: Sequence[Sequence[int]] | None = None,
    family: str | None = None,
    batch_size: int = 8,
    pad_id: int = 0,
    decoder_start_id: int = 0,
    max_length: int | None = None,
    score_fn: Callable[[Any, dict], jax.Array] | None = None,
) -> list[SequenceScore]:
  """Per-token log-probabilities of each sequence.

  decoder: scores token_rows[i][1:], each token given the ones before it (prepend a BOS
  token to score the first one). encoder_decoder: scores target_rows[i] given token_rows[i]
  as the encoder input, the decoder starting from `decoder_start_id`. Rows are padded to a
  power-of-two length and `batch_size` rows; padding never changes a score. `max_length`
  (the longest input the model takes, e.g. its learned position table) is checked per row.
  """
  family = _family_of(model, family)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if family == "decoder":
    if target_rows is not None:
      raise ValueError("target_rows is for encoder_decoder models; a decoder scores token_rows")
    rows = _check_rows(token_rows, "token_rows", 2, max_length, not_fed=1)
    make_batch = lambda i: decoder_scoring_batch(rows[i:i + batch_size], batch_size, pad_id)
    lengths = [len(r) - 1 for r in rows]
  elif family == "encoder_decoder":
    if target_rows is None:
      raise ValueError("an encoder_decoder model needs target_rows (the decoder side to score)")
    rows = _check_rows(token_rows, "token_rows", 1, max_length)
    targets = _check_rows(target_rows, "target_rows", 1, max_length)
    if len(rows) != len(targets):
      raise ValueError(f"{len(rows)} token_rows but {len(targets)} target_rows")
    make_batch = lambda i: seq2seq_scoring_batch(
        rows[i:i + batch_size], targets[i:i + batch_size], batch_size, pad_id, decoder_start_id)
    lengths = [len(t) for t in targets]
  else:
    raise ValueError(f"sequence log-likelihoods need a decoder or encoder_decoder model, "
                     f"got family={family!r}")

  score_fn = score_fn or make_score_fn(model, family)
  scores = []
  for start in range(0, len(rows), batch_size):
    log_probs_BxL = np.asarray(jax.device_get(score_fn(params, make_batch(start))))
    for i, length in enumerate(lengths[start:start + batch_size]):
      scores.append(SequenceScore(log_probs_BxL[i, :length].astype(np.float32)))
  return scores


# -- Dataset metrics. ------------------------------------------------------------------------


def metrics_from_batches(
    step_or_model: nn.Module | Callable[[Any, dict], dict],
    params: Any,
    batches: Iterable[dict],
    *,
    family: str | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
  """Loss (mean weighted NLL), perplexity and token accuracy over `batches`.

  `step_or_model` is a model, or an eval step `(params, batch) -> {loss_sum, weight_sum,
  correct_sum}` such as `training.train_step.make_eval_step(...)` (then `batches` must be
  placed as that step expects). Sums are accumulated in float64 on the host.
  """
  if isinstance(step_or_model, nn.Module):
    step = make_sums_fn(step_or_model, family)
  elif callable(step_or_model):
    step = step_or_model
  else:
    raise ValueError(f"expected a model or an eval step, got {type(step_or_model).__name__}")
  loss_sum = weight_sum = correct_sum = 0.0
  num_batches = 0
  for batch in batches:
    if max_batches is not None and num_batches >= max_batches:
      break
    missing = {"targets", "loss_weights"} - set(batch)
    if missing:
      raise ValueError(f"batch {num_batches} has no field(s) {sorted(missing)}")
    sums = jax.device_get(step(params, batch))
    loss_sum += float(sums["loss_sum"])
    weight_sum += float(sums["weight_sum"])
    correct_sum += float(sums["correct_sum"])
    num_batches += 1
  if weight_sum <= 0:
    raise ValueError(f"no token with a positive loss weight in {num_batches} batches")
  loss = loss_sum / weight_sum
  return {"loss": loss, "perplexity": math.exp(loss), "accuracy": correct_sum / weight_sum,
          "tokens": weight_sum, "batches": num_batches}


def perplexity_from_batches(step_or_model, params, batches, **kwargs) -> float:
  """exp(total weighted NLL / total weight) over `batches` (see `metrics_from_batches`)."""
  return metrics_from_batches(step_or_model, params, batches, **kwargs)["perplexity"]


def token_accuracy(step_or_model, params, batches, **kwargs) -> float:
  """Share of weighted target tokens that are the model's argmax prediction."""
  return metrics_from_batches(step_or_model, params, batches, **kwargs)["accuracy"]


def mlm_accuracy(model: nn.Module, params: Any, batches: Iterable[dict], **kwargs) -> float:
  """Masked-token accuracy of an encoder over MLM batches (loss_weights mark masked tokens)."""
  family = _family_of(model, kwargs.pop("family", None))
  if family != "encoder":
    raise ValueError(f"mlm_accuracy needs an encoder model, got family={family!r}")
  return token_accuracy(model, params, batches, family=family, **kwargs)
