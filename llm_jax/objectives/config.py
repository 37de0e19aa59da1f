"""The experiment's `objective` config section and its defaults."""

import ml_collections
from ml_collections import config_dict

# (mode, mean_noise_span_length, noise_density, weight). R and X rows are T5 span
# corruption; the S row is a prefix-LM split whose targets are on average
# `noise_density` of the chunk. One third of the weight per paradigm (R, X, S).
UL2_DENOISERS = (
    ("R", 3.0, 0.15, 1 / 6),
    ("R", 8.0, 0.15, 1 / 6),
    ("X", 3.0, 0.5, 1 / 12),
    ("X", 8.0, 0.5, 1 / 12),
    ("X", 64.0, 0.15, 1 / 12),
    ("X", 64.0, 0.5, 1 / 12),
    ("S", 0.0, 0.25, 1 / 3),
)


def default_objective_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  # 'clm' | 'prefix_lm' | 'mlm' | 'span_corruption' | 'bart' | 'ul2' | 'deshuffle' |
  # 'bert_denoising' (BERT-style masking as seq2seq: reconstruct the chunk; uses the MLM rates).
  cfg.name = "clm"
  # A chunk longer than the objective's raw_length: 'truncate' it or raise ('error').
  cfg.overflow = "error"
  # Encoder-decoder decoder start id; unset means pad_id (T5, UL2) or eos_id (BART).
  cfg.decoder_start_id = config_dict.placeholder(int)

  # prefix-LM: the prefix takes a uniform fraction in this range of the example.
  cfg.prefix_fraction_min = 0.0
  cfg.prefix_fraction_max = 1.0

  # MLM (BERT): exactly round(mask_rate * n) of the n non-special tokens are selected.
  cfg.mask_rate = 0.15
  cfg.mask_token_rate = 0.8  # of the selected: [MASK]
  cfg.random_token_rate = 0.1  # of the selected: a random non-special token; rest unchanged
  cfg.max_predictions = config_dict.placeholder(int)  # BERT's max_predictions_per_seq
  cfg.whole_word_masking = False
  cfg.nsp = False  # [CLS] A [SEP] B [SEP] with next-sentence labels

  # Span corruption (T5).
  cfg.noise_density = 0.15
  cfg.mean_noise_span_length = 3.0

  # BART: sentence permutation, then text infilling.
  cfg.bart_mask_ratio = 0.3
  cfg.bart_poisson_lambda = 3.0
  cfg.bart_random_ratio = 0.1  # of the infilled spans: a random token instead of <mask>
  cfg.bart_permute_sentences = True
  cfg.sentence_end_ids = ()  # token ids that end a sentence (e.g. the id of ".")

  # UL2 mixture of denoisers: (mode, mean_noise_span_length, noise_density, weight).
  cfg.ul2_denoisers = UL2_DENOISERS
  return cfg
