"""Deshuffling (Raffel et al. 2020, T5 section 3.3.1): inputs are the chunk's tokens in a
random order, targets the chunk as it was.

Inputs = a uniform permutation of the chunk + EOS; targets = the chunk + EOS; decoder inputs
start with `decoder_start_id` (pad, as in T5).
"""

import dataclasses

import numpy as np

from llm_jax.objectives import base


@dataclasses.dataclass(frozen=True)
class Deshuffle:
  sequence_length: int
  target_length: int
  vocab_size: int
  eos_id: int
  decoder_start_id: int
  overflow: str = "error"
  family = "encoder_decoder"

  def __post_init__(self):
    if min(self.sequence_length, self.target_length) < 2:
      raise ValueError("deshuffle: sequence_length and target_length must be >= 2, got "
                       f"{self.sequence_length}, {self.target_length}.")
    base.check_overflow_mode(self.overflow)

  @property
  def raw_length(self) -> int:
    return min(self.sequence_length, self.target_length) - 1

  @property
  def feature_lengths(self) -> dict[str, int]:
    return {"inputs": self.sequence_length, "targets": self.target_length,
            "loss_weights": self.target_length, "decoder_inputs": self.target_length}

  def __call__(self, tokens, rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = base.prepare_tokens(tokens, name="deshuffle", raw_length=self.raw_length,
                                 overflow=self.overflow, vocab_size=self.vocab_size)
    eos = np.array([self.eos_id], np.int32)
    shuffled = tokens[rng.permutation(len(tokens))]
    return base.seq2seq_features(np.concatenate([shuffled, eos]), np.concatenate([tokens, eos]),
                                 self.decoder_start_id)
