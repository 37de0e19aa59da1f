"""Rollouts: G completions per prompt from the compiled KV-cache sampler with the current
parameters, and the training batch of prompt + completion rows they make.

A completion ends at its first stop token (EOS, and '\n' with alignment.stop_at_newline),
which it keeps; the sampler itself stops early once every row has emitted EOS. Rows of the
batch are prompt + completion, right-padded to a fixed length so that every iteration reuses
one compiled train step; loss_weights are 1 on the completion's target tokens.
"""

import dataclasses

import jax
import numpy as np

from llm_jax import decoding
from llm_jax import sharding


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  eos_id: int | None = None
  pad_id: int = 0
  stop_ids: tuple[int, ...] = ()  # EOS and any other token that ends a completion
  vocab_limit: int | None = None


def sampler_options(align, tokenizer) -> SamplerOptions:
  """The rollout sampler of an `alignment` config section and the run's tokenizer."""
  specials = tokenizer.specials
  stop_ids = [] if specials.eos_id is None else [specials.eos_id]
  if align.stop_at_newline:
    stop_ids += tokenizer.encode("\n")[-1:]
  return SamplerOptions(
      max_new_tokens=int(align.max_new_tokens), temperature=float(align.temperature),
      top_k=int(align.top_k), top_p=float(align.top_p), eos_id=specials.eos_id,
      pad_id=int(specials.pad_id), stop_ids=tuple(stop_ids), vocab_limit=tokenizer.vocab_size)


def repeat_prompts(prompt_ids: list[list[int]], num_generations: int) -> list[list[int]]:
  """Each prompt G times in a row: rows g*G .. g*G + G-1 are group g."""
  return [list(p) for p in prompt_ids for _ in range(num_generations)]


def sample(model, params, rows: list[list[int]], rng, opts: SamplerOptions, mesh=None,
           rules=None, method: str = "sample") -> np.ndarray:
  """completions_BxN (int32, pad after EOS) of the prompt rows, sampled (or greedy) with the
  compiled decoder under the run's mesh; params may be the sharded training parameters."""
  def run():
    return decoding.generate(
        model, params, rows, max_new_tokens=opts.max_new_tokens, method=method,
        temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, eos_id=opts.eos_id,
        pad_id=opts.pad_id, rng=rng, vocab_limit=opts.vocab_limit).tokens
  if mesh is None:
    return np.asarray(jax.device_get(run()))
  with sharding.mesh_context(mesh, rules):
    return np.asarray(jax.device_get(run()))


def completion_lengths(completions_BxN: np.ndarray, stop_ids) -> np.ndarray:
  """Tokens of each completion up to and including its first stop token (all N without one)."""
  is_stop_BxN = np.isin(completions_BxN, np.asarray(stop_ids, np.int32))
  has_stop_B = is_stop_BxN.any(axis=1)
  first_stop_B = np.argmax(is_stop_BxN, axis=1)
  return np.where(has_stop_B, first_stop_B + 1, completions_BxN.shape[1]).astype(np.int32)


def completion_texts(tokenizer, completions_BxN, lengths_B, stop_ids) -> list[str]:
  """The text of each completion without its stop token."""
  texts = []
  for tokens, n in zip(completions_BxN, lengths_B):
    ids = [int(t) for t in tokens[:n] if int(t) not in stop_ids]
    texts.append(tokenizer.decode(ids))
  return texts


def training_batch(rows: list[list[int]], completions_BxN: np.ndarray, lengths_B: np.ndarray,
                   row_length: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """inputs/targets/loss_weights/input_segment_ids/input_positions [B, row_length - 1] of
  prompt + completion rows; loss weight 1 on the completion's target tokens."""
  batch = len(rows)
  tokens_BxS = np.full((batch, row_length), pad_id, np.int32)
  weights_BxS = np.zeros((batch, row_length), np.float32)
  real_BxS = np.zeros((batch, row_length), np.int32)
  for b, (prompt, completion, n) in enumerate(zip(rows, completions_BxN, lengths_B)):
    end = len(prompt) + int(n)
    if end > row_length:
      raise ValueError(f"rollout row {b}: prompt ({len(prompt)} tokens) + completion ({n}) "
                       f"exceeds the row length {row_length}")
    tokens_BxS[b, :len(prompt)] = prompt
    tokens_BxS[b, len(prompt):end] = completion[:n]
    weights_BxS[b, len(prompt):end] = 1.0
    real_BxS[b, :end] = 1
  length = row_length - 1
  return {
      "inputs": tokens_BxS[:, :-1],
      "targets": tokens_BxS[:, 1:],
      "loss_weights": weights_BxS[:, 1:],
      "input_segment_ids": real_BxS[:, :-1],
      "input_positions": np.broadcast_to(np.arange(length, dtype=np.int32),
                                         (batch, length)).copy(),
  }
