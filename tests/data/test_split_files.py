"""data.train_files / data.eval_files name the splits of a 'files' corpus."""

import pytest

from llm_jax.data import make_pipeline, sources
from data_helpers import experiment_config, write_corpus


def _split_config(tmp_path, train_glob, eval_glob, doc_split="line"):
  cfg = experiment_config(tmp_path / "data", files_glob="")
  cfg.data.source = "files"
  cfg.data.train_files, cfg.data.eval_files = train_glob, eval_glob
  cfg.data.doc_split = doc_split
  cfg.data.validation_fraction = 0.0
  return cfg


def _texts(cfg, split):
  corpus = sources.make_corpus(cfg.data, split)
  return [sources.document_text(corpus, corpus.source[i]) for i in range(len(corpus.source))], corpus


def test_eval_files_never_reach_train_and_train_files_never_reach_eval(tmp_path):
  write_corpus(tmp_path / "train", num_files=5)
  write_corpus(tmp_path / "heldout", num_files=2, lines_per_file=4)
  (tmp_path / "heldout" / "doc00.txt").write_text("only in validation one\nonly in validation two\n")
  cfg = _split_config(tmp_path, str(tmp_path / "train" / "*.txt"), str(tmp_path / "heldout" / "*.txt"))
  train, train_corpus = _texts(cfg, "train")
  validation, validation_corpus = _texts(cfg, "validation")
  train_paths = {train_corpus.source[i]["path"] for i in range(len(train))}
  validation_paths = {validation_corpus.source[i]["path"] for i in range(len(validation))}
  assert {p.decode().split("/")[0] for p in train_paths} == {"train"}
  assert {p.decode().split("/")[0] for p in validation_paths} == {"heldout"}
  assert len(train) == 5 * 6 and len(validation) == 2 + 4
  assert "only in validation one" in validation and "only in validation one" not in train


def test_a_file_in_both_splits_is_an_error(tmp_path):
  glob = write_corpus(tmp_path / "c", num_files=3)
  cfg = _split_config(tmp_path, glob, str(tmp_path / "c" / "doc01.txt"))
  with pytest.raises(ValueError, match="one split only"):
    sources.make_corpus(cfg.data, "train")


def test_missing_eval_files_name_the_field(tmp_path):
  glob = write_corpus(tmp_path / "c", num_files=3)
  cfg = _split_config(tmp_path, glob, "")
  with pytest.raises(ValueError, match="data.eval_files"):
    sources.make_corpus(cfg.data, "train")
  cfg = _split_config(tmp_path, glob, str(tmp_path / "nothing*.txt"))
  with pytest.raises(ValueError, match="data.eval_files=.*matches no files"):
    sources.make_corpus(cfg.data, "train")


def test_validation_fraction_zero_needs_split_files(tmp_path):
  cfg = experiment_config(tmp_path / "data", files_glob=write_corpus(tmp_path / "c"))
  cfg.data.validation_fraction = 0.0
  with pytest.raises(ValueError, match="data.train_files and data.eval_files"):
    sources.make_corpus(cfg.data, "train")


def test_pipeline_batches_come_from_their_own_split(tmp_path):
  (tmp_path / "a.txt").write_text("a" * 400)
  (tmp_path / "b.txt").write_text("b" * 400)
  cfg = _split_config(tmp_path, str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), doc_split="file")
  byte = lambda ch: ord(ch) + 9  # ByteTokenizer: byte b is id 9 + b.
  for split, char in (("train", "a"), ("eval", "b")):
    batch = next(make_pipeline(cfg, split))
    real = batch["inputs"][batch["loss_weights"] > 0]
    assert set(real.tolist()) <= {byte(char), 1}, split  # the text's byte, or EOS
    assert byte(char) in real
