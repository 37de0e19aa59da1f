"""Tiny models and tokenizers for the harness, embedding and retrieval tests (all offline)."""

import json
import os

import jax
import ml_collections

from llm_jax import models
from llm_jax.data.byte_tokenizer import ByteTokenizer

WORDS = ["<|endoftext|>"] + [f"w{i}" for i in range(63)]


def tiny_byte_decoder(max_len: int = 64, seed: int = 0, family: str = "decoder"):
  """(model, params, model_cfg, tokenizer): a random 1-layer model over UTF-8 bytes."""
  cfg = models.default_model_config()
  tokenizer = ByteTokenizer(num_sentinels=0)
  cfg.update(family=family, vocab_size=tokenizer.vocab_size, d_model=32, num_layers=1,
             num_heads=2, d_ff=64, max_len=max_len, dropout_rate=0.0,
             attention_dropout_rate=0.0, pad_token_id=0)
  if family == "encoder":
    cfg.update(mlm_head=False)
  model = models.build_model(cfg)
  params = models.abstract_params(model, cfg)
  x = jax.numpy.ones((1, 4), jax.numpy.int32)
  args = (x, x) if family == "encoder_decoder" else (x,)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.unbox(model.init(jax.random.key(seed), *args)["params"])
  return model, params, ml_collections.ConfigDict(cfg), tokenizer


def word_tokenizer_files(folder: str, words=WORDS, *, bert: bool = False) -> None:
  """A word-level tokenizer.json (+ PreTrainedTokenizerFast files) in `folder`."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  unk = "[UNK]" if bert else "<|endoftext|>"
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      {w: i for i, w in enumerate(words)}, unk_token=unk))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tokenizer.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
  if bert:
    tokenizer.post_processor = tokenizers.processors.BertProcessing(
        ("[SEP]", words.index("[SEP]")), ("[CLS]", words.index("[CLS]")))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]")
  else:
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>")
  fast.save_pretrained(folder)
  tokenizer.save(os.path.join(folder, "tokenizer.json"))


def save_random_gpt2(folder: str, seed: int = 0, n_positions: int = 32, n_layer: int = 2):
  """A random GPT2LMHeadModel over WORDS with its tokenizer; returns (torch model, fast tokenizer)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  config = transformers.GPT2Config(vocab_size=len(WORDS), n_positions=n_positions, n_embd=32,
                                   n_layer=n_layer, n_head=2, initializer_range=0.3,
                                   bos_token_id=0, eos_token_id=0)
  model = transformers.GPT2LMHeadModel(config).eval()
  model.save_pretrained(folder)
  word_tokenizer_files(folder)
  return model, transformers.PreTrainedTokenizerFast.from_pretrained(folder)


def word_choice_docs(num: int, seed: int) -> list[dict]:
  """Multiple-choice documents over WORDS: a context of 3-8 words, 2-4 choices of 1-3 words."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  words = WORDS[1:]
  docs = []
  for i in range(num):
    context = " ".join(rng.choice(words, int(rng.integers(3, 9))))
    choices = [" ".join(rng.choice(words, int(rng.integers(1, 4))))
               for _ in range(int(rng.integers(2, 5)))]
    docs.append({"id": i, "context": context, "choices": choices,
                 "label": int(rng.integers(0, len(choices)))})
  return docs


def write_jsonl(path: str, rows) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)
