"""data.tokenizer='char': nanoGPT's character vocabulary, built from the training split."""

import json
import os

import pytest

from llm_jax.data import make_pipeline, make_tokenizer
from llm_jax.data.char_tokenizer import CharTokenizer
from data_helpers import experiment_config

# The 65 characters of nanoGPT's shakespeare_char vocabulary (data/shakespeare_char/prepare.py).
NANOGPT_CHARS = "\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"


def _shakespeare_like(copies: int = 3) -> str:
  speech = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
            "All:\nSpeak, speak! What's the matter -- is't $3 & more?\n\n")
  alphabet = "".join(sorted(set(NANOGPT_CHARS) - set(speech) - {"\n"}))
  return (speech + "JOHN OF GAUNT:\n" + " ".join(alphabet) + ";\n\n") * copies


@pytest.fixture
def char_config(tmp_path):
  (tmp_path / "train.txt").write_text(_shakespeare_like())
  (tmp_path / "val.txt").write_text("Speak, Zed! \u00e9\n")  # '\u00e9' is not in the training text.
  cfg = experiment_config(tmp_path / "data")
  cfg.data.source, cfg.data.doc_split, cfg.data.tokenizer = "files", "stream", "char"
  cfg.data.train_files, cfg.data.eval_files = str(tmp_path / "train.txt"), str(tmp_path / "val.txt")
  cfg.data.sequence_length = 8
  return cfg


def test_builds_nanogpts_65_symbol_vocabulary_from_the_training_text(char_config):
  tokenizer = make_tokenizer(char_config.data)
  assert tokenizer.chars == NANOGPT_CHARS and len(tokenizer.chars) == 65
  stoi = {c: i for i, c in enumerate(sorted(set(_shakespeare_like())))}  # nanoGPT's prepare.py
  text = _shakespeare_like(1)
  assert tokenizer.encode(text) == [stoi[c] for c in text]
  assert tokenizer.decode(tokenizer.encode(text)) == text
  specials = tokenizer.specials
  assert {specials.pad_id, specials.eos_id, tokenizer.unk_id} == {65, 66, 67}
  assert tokenizer.vocab_size == 68


def test_unknown_characters_map_to_unk_and_the_vocabulary_is_stored(char_config):
  tokenizer = make_tokenizer(char_config.data)
  assert tokenizer.encode("Z\u00e9") == [NANOGPT_CHARS.index("Z"), tokenizer.unk_id]
  stored = [os.path.join(d, f) for d, _, fs in os.walk(char_config.data.data_dir) for f in fs
            if f.startswith("char_") and f.endswith(".json")]
  assert len(stored) == 1
  with open(stored[0], encoding="utf-8") as f:
    assert json.load(f)["chars"] == NANOGPT_CHARS
  char_config.data.tokenizer_path = stored[0]  # what evaluation and generation load
  assert make_tokenizer(char_config.data).chars == NANOGPT_CHARS
  eval_batch = next(make_pipeline(char_config, "eval"))
  assert tokenizer.unk_id in eval_batch["targets"]


def test_bad_vocabulary_file_names_the_field(tmp_path):
  path = tmp_path / "vocab.json"
  path.write_text("{}")
  with pytest.raises(ValueError, match="data.tokenizer_path"):
    CharTokenizer.load(str(path))
