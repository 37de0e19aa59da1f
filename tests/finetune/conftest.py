"""Small Hugging Face folders (random weights, a tokenizer trained here) and task files."""

import json
import random

import pytest

WORDS = {"pos": ["good", "great", "fine", "happy", "bright", "kind"],
         "neg": ["bad", "awful", "poor", "sad", "dark", "cruel"]}
FILLER = ["the", "a", "day", "film", "was", "very", "and", "it", "so", "of", "this", "one"]


def sentiment_rows(n, seed):
  """Rows {text, label} whose label is told by a sentiment word among filler words."""
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    label = rng.choice(sorted(WORDS))
    words = rng.choices(FILLER, k=6) + [rng.choice(WORDS[label])]
    rng.shuffle(words)
    rows.append({"text": " ".join(words), "label": label})
  return rows


def write_jsonl(path, rows):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


def word_piece_tokenizer(path, texts, vocab_size=128):
  """A BERT-style WordPiece tokenizer.json trained on `texts`."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.train_from_iterator(texts, trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
  tok.save(str(path))


def byte_level_tokenizer(path, texts, vocab_size=300):
  """A GPT-2-style byte-level BPE tokenizer.json with <|endoftext|>, trained on `texts`."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(str(path))


@pytest.fixture(scope="module")
def sentiment_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("sentiment")
  return (write_jsonl(root / "train.jsonl", sentiment_rows(400, 0)),
          write_jsonl(root / "validation.jsonl", sentiment_rows(64, 1)))


@pytest.fixture(scope="module")
def hf_bert_folder(tmp_path_factory):
  """A random BertForMaskedLM (d 32, 2 layers) with a WordPiece tokenizer.json."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp("hf_bert")
  word_piece_tokenizer(folder / "tokenizer.json", [r["text"] for r in sentiment_rows(200, 2)])
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64))
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder)


def repeat_rows(n, seed):
  """SFT rows: the response repeats the prompt's word."""
  rng = random.Random(seed)
  words = WORDS["pos"] + WORDS["neg"] + FILLER
  return [{"prompt": f"Repeat: {w}", "response": w} for w in rng.choices(words, k=n)]


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("sft")
  return (write_jsonl(root / "train.jsonl", repeat_rows(400, 0)),
          write_jsonl(root / "validation.jsonl", repeat_rows(32, 1)))


@pytest.fixture(scope="module")
def hf_llama_folder(tmp_path_factory):
  """A random LlamaForCausalLM (GQA, d 32, 2 layers) with a byte-level BPE tokenizer.json."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp("hf_llama")
  texts = [f"{r['prompt']}\n{r['response']}" for r in repeat_rows(300, 3)]
  byte_level_tokenizer(folder / "tokenizer.json", texts)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
      tie_word_embeddings=False, initializer_range=0.3))  # logits wide enough to be learned
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder)
