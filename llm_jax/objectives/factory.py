"""make_objective: the experiment's `objective` config section -> an Objective."""

from typing import Callable

import ml_collections
import numpy as np

from llm_jax.objectives import base
from llm_jax.objectives import bart
from llm_jax.objectives import bert_denoising
from llm_jax.objectives import causal
from llm_jax.objectives import deshuffle
from llm_jax.objectives import mlm
from llm_jax.objectives import span_corruption
from llm_jax.objectives import ul2
from llm_jax.objectives.specials import SpecialTokens

NAMES = ("clm", "prefix_lm", "mlm", "span_corruption", "bart", "ul2", "deshuffle", "bert_denoising")


def make_objective(cfg: ml_collections.ConfigDict, specials: SpecialTokens,
                   sequence_length: int, target_length: int | None = None, *,
                   is_word_start: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> base.Objective:
  """Builds `cfg.name` for `sequence_length` inputs (and `target_length` decoder targets).

  `target_length` applies to encoder-decoder objectives only; unset, it is the length a
  full chunk yields (span corruption) or `sequence_length` (BART, UL2).
  `is_word_start` maps token ids to a boolean "starts a word" array (MLM whole-word masking).
  """
  name = cfg.name
  overflow = base.check_overflow_mode(cfg.overflow)
  if target_length is not None and name in ("clm", "prefix_lm", "mlm"):
    raise ValueError(f"objective {name!r} has no separate target_length; got {target_length}.")
  vocab_size = specials.vocab_size
  if name == "clm":
    return causal.CausalLM(sequence_length, vocab_size, overflow=overflow)
  if name == "prefix_lm":
    return causal.PrefixLM(sequence_length, vocab_size, cfg.prefix_fraction_min,
                           cfg.prefix_fraction_max, overflow=overflow)
  if name == "mlm":
    return mlm.MaskedLM(
        sequence_length, vocab_size, specials.require("mask_id", "mlm"), specials.special_ids,
        mask_rate=cfg.mask_rate, mask_token_rate=cfg.mask_token_rate,
        random_token_rate=cfg.random_token_rate, max_predictions=cfg.max_predictions,
        whole_word_masking=cfg.whole_word_masking, is_word_start=is_word_start,
        nsp=cfg.nsp, cls_id=specials.cls_id, sep_id=specials.sep_id, overflow=overflow)
  if name == "span_corruption":
    if not specials.sentinel_ids:
      raise ValueError("The span_corruption objective needs SpecialTokens.sentinel_ids, "
                       "which is empty.")
    return span_corruption.SpanCorruption(
        sequence_length, vocab_size, specials.sentinel_ids,
        specials.require("eos_id", name), _decoder_start_id(cfg, specials.pad_id),
        noise_density=cfg.noise_density, mean_noise_span_length=cfg.mean_noise_span_length,
        target_length=target_length, overflow=overflow)
  if name == "bart":
    eos_id = specials.require("eos_id", name)
    return bart.BartDenoising(
        sequence_length, target_length or sequence_length, vocab_size,
        specials.require("mask_id", name), eos_id, _decoder_start_id(cfg, eos_id),
        special_ids=specials.special_ids, mask_ratio=cfg.bart_mask_ratio,
        poisson_lambda=cfg.bart_poisson_lambda, random_ratio=cfg.bart_random_ratio,
        permute_sentences=cfg.bart_permute_sentences,
        sentence_end_ids=tuple(cfg.sentence_end_ids), overflow=overflow)
  if name == "deshuffle":
    return deshuffle.Deshuffle(
        sequence_length, target_length or sequence_length, vocab_size,
        specials.require("eos_id", name), _decoder_start_id(cfg, specials.pad_id),
        overflow=overflow)
  if name == "bert_denoising":
    return bert_denoising.BertStyleDenoising(
        sequence_length, target_length or sequence_length, vocab_size,
        specials.require("mask_id", name), specials.require("eos_id", name),
        _decoder_start_id(cfg, specials.pad_id), special_ids=specials.special_ids,
        mask_rate=cfg.mask_rate, mask_token_rate=cfg.mask_token_rate,
        random_token_rate=cfg.random_token_rate, overflow=overflow)
  if name == "ul2":
    if not specials.mode_ids:
      raise ValueError("The ul2 objective needs SpecialTokens.mode_ids "
                       "({'[NLU]': id, '[NLG]': id, '[S2S]': id}), which is None.")
    return ul2.UL2(
        sequence_length, target_length or sequence_length, vocab_size,
        tuple(tuple(d) for d in cfg.ul2_denoisers), dict(specials.mode_ids),
        specials.sentinel_ids, specials.require("eos_id", name),
        _decoder_start_id(cfg, specials.pad_id), overflow=overflow)
  raise ValueError(f"objective.name must be one of {NAMES}, got {name!r}.")


def _decoder_start_id(cfg, default: int) -> int:
  return default if cfg.decoder_start_id is None else cfg.decoder_start_id
