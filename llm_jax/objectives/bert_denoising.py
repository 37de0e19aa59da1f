"""BERT-style denoising as seq2seq (Raffel et al. 2020, T5 section 3.3.1): corrupt
round(mask_rate * n) of the n non-special tokens as BERT does, and reconstruct the whole
original chunk.

Of the corrupted tokens, `mask_token_rate` become [MASK], `random_token_rate` a random
non-special token and the rest stay (T5's variant: 90% [MASK], 10% random, none kept).
Inputs = the corrupted chunk + EOS; targets = the chunk + EOS.
"""

import dataclasses

import numpy as np

from llm_jax.objectives import base
from llm_jax.objectives import mlm


@dataclasses.dataclass(frozen=True)
class BertStyleDenoising:
  sequence_length: int
  target_length: int
  vocab_size: int
  mask_id: int
  eos_id: int
  decoder_start_id: int
  special_ids: frozenset = frozenset()
  mask_rate: float = 0.15
  mask_token_rate: float = 0.9
  random_token_rate: float = 0.1
  overflow: str = "error"
  family = "encoder_decoder"

  def __post_init__(self):
    if min(self.sequence_length, self.target_length) < 2:
      raise ValueError("bert_denoising: sequence_length and target_length must be >= 2, got "
                       f"{self.sequence_length}, {self.target_length}.")
    base.check_overflow_mode(self.overflow)
    object.__setattr__(self, "_masker", mlm.MaskedLM(
        self.raw_length, self.vocab_size, self.mask_id, self.special_ids | {self.eos_id},
        mask_rate=self.mask_rate, mask_token_rate=self.mask_token_rate,
        random_token_rate=self.random_token_rate, overflow=self.overflow))

  @property
  def raw_length(self) -> int:
    return min(self.sequence_length, self.target_length) - 1

  @property
  def feature_lengths(self) -> dict[str, int]:
    return {"inputs": self.sequence_length, "targets": self.target_length,
            "loss_weights": self.target_length, "decoder_inputs": self.target_length}

  def __call__(self, tokens, rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = base.prepare_tokens(tokens, name="bert_denoising", raw_length=self.raw_length,
                                 overflow=self.overflow, vocab_size=self.vocab_size)
    corrupted = self._masker(tokens, rng)["inputs"][:len(tokens)]
    eos = np.array([self.eos_id], np.int32)
    return base.seq2seq_features(np.concatenate([corrupted, eos]), np.concatenate([tokens, eos]),
                                 self.decoder_start_id)
