"""A binary or non-UTF-8 corpus file is named with its counts: warned, skipped or refused."""

import logging
import os

import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.data import corpus_check
from llm_jax.data import sources


@pytest.fixture
def corpus(tmp_path):
  root = tmp_path / "corpus"
  root.mkdir()
  (root / "good.txt").write_text("def f(x):\n    return x + 1  # café\n" * 50, encoding="utf-8")
  (root / "more.txt").write_text("plain English text about functions.\n" * 50, encoding="utf-8")
  (root / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
  (root / "program.elf").write_bytes(b"\x7fELF\x02\x01\x01\0\0\0\0" + b"\0" * 200 + b"main")
  (root / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve fa\xe7ade.\n".encode("latin-1") * 20)
  return str(root)


def test_counts_replaced_characters_and_nul_bytes(corpus):
  good = corpus_check.decoding(os.path.join(corpus, "good.txt"))
  assert good.is_text and good.replaced == 0 and good.nul_bytes == 0
  latin1 = corpus_check.decoding(os.path.join(corpus, "latin1.txt"))
  assert latin1.replaced == 20 * 6 and not latin1.is_text
  elf = corpus_check.decoding(os.path.join(corpus, "program.elf"))
  assert elf.nul_bytes > 0 and not elf.is_text


def test_warn_names_the_files_skip_leaves_them_out_error_stops(corpus, caplog):
  paths = sorted(os.listdir(corpus))
  with caplog.at_level(logging.WARNING):
    assert corpus_check.checked_paths(corpus, paths, "warn") == paths
  warning = caplog.text
  assert "3 of 5 corpus files are not UTF-8 text" in warning
  for name in ("random.bin", "program.elf", "latin1.txt"):
    assert name in warning
  assert "good.txt" not in warning
  assert corpus_check.checked_paths(corpus, paths, "skip") == ["good.txt", "more.txt"]
  with pytest.raises(ValueError, match="latin1.txt .*data.undecodable_files='error'"):
    corpus_check.checked_paths(corpus, paths, "error")
  with pytest.raises(ValueError, match="data.undecodable_files='sometimes'"):
    corpus_check.checked_paths(corpus, paths, "sometimes")


def test_files_corpus_skips_binary_files(corpus, tmp_path):
  cfg = config_lib.base_config()
  cfg.data.update(source="files", files_glob=os.path.join(corpus, "*"), undecodable_files="skip",
                  data_dir=str(tmp_path / "cache"), validation_fraction=0.5, doc_split="line")
  texts = []
  for split in ("train", "validation"):
    corpus_split = sources.make_corpus(cfg.data, split)
    texts += [corpus_split.source[i]["text"] for i in range(len(corpus_split.source))]
  texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
  assert len(texts) == 150  # the 100 + 50 lines of the two text files
  assert not any("\ufffd" in t or "ELF" in t for t in texts)
  cfg.data.undecodable_files = "error"
  with pytest.raises(ValueError, match="random.bin"):
    sources.make_corpus(cfg.data, "train")
