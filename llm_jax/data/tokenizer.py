"""`make_tokenizer(cfg.data)`: a tokenizer with .encode, .decode, .vocab_size and .specials."""

import os
from typing import Protocol

import ml_collections

from llm_jax.data import sources
from llm_jax.data.byte_tokenizer import ByteTokenizer
from llm_jax.data.char_tokenizer import CharTokenizer, cached_char_tokenizer
from llm_jax.data.hf_tokenizer import HFTokenizer
from llm_jax.data.spm_tokenizer import SentencePieceTokenizer, cached_sentencepiece
from llm_jax.objectives import SpecialTokens

TOKENIZERS = ("byte", "sentencepiece", "hf", "char")


class Tokenizer(Protocol):
  vocab_size: int
  specials: SpecialTokens

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids) -> str:
    ...


def _training_documents(cfg: ml_collections.ConfigDict):
  corpus = sources.make_corpus(cfg, cfg.train_split)
  for i in range(len(corpus.source)):
    yield sources.document_text(corpus, corpus.source[i])


def make_tokenizer(cfg: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer of the experiment's `data` section (trains SentencePiece on first use)."""
  path = os.path.expanduser(cfg.tokenizer_path) if cfg.tokenizer_path else ""
  if cfg.tokenizer == "byte":
    return ByteTokenizer(cfg.num_sentinels)
  if cfg.tokenizer == "sentencepiece":
    if path:
      if not path.endswith(".model"):
        raise ValueError(f"data.tokenizer_path={path!r}: a SentencePiece model file ends in '.model'")
      return SentencePieceTokenizer(path, cfg.num_sentinels)
    corpus_id = sources.make_corpus(cfg, cfg.train_split).corpus_id
    return cached_sentencepiece(
        _training_documents(cfg), corpus_id, os.path.join(os.path.expanduser(cfg.data_dir), "tokenizers"),
        vocab_size=cfg.spm_vocab_size, model_type=cfg.spm_model_type,
        num_sentinels=cfg.num_sentinels, max_sentences=cfg.spm_max_sentences)
  if cfg.tokenizer == "char":
    if path:
      return CharTokenizer.load(path)
    corpus_id = sources.make_corpus(cfg, cfg.train_split).corpus_id
    return cached_char_tokenizer(_training_documents(cfg), corpus_id,
                                 os.path.join(os.path.expanduser(cfg.data_dir), "tokenizers"))
  if cfg.tokenizer == "hf":
    if not path:
      raise ValueError("data.tokenizer='hf' needs data.tokenizer_path (a tokenizer.json or its folder)")
    return HFTokenizer(path)
  raise ValueError(f"data.tokenizer must be one of {TOKENIZERS}, got {cfg.tokenizer!r}")
