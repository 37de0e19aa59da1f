"""Startup of a corpus that is one long document: bounded time and read-ahead."""

import time

from llm_jax.data import make_pipeline, make_tokenizer, sources
from data_helpers import experiment_config, WORDS


class _CountingTokenizer:
  """The config's tokenizer, counting how often a document is tokenized."""

  def __init__(self, tokenizer):
    self._tokenizer = tokenizer
    self.vocab_size, self.specials = tokenizer.vocab_size, tokenizer.specials
    self.calls = 0

  def encode(self, text):
    self.calls += 1
    return self._tokenizer.encode(text)

  def decode(self, ids):
    return self._tokenizer.decode(ids)


def test_first_batch_of_a_1mb_single_document_corpus_is_fast_and_reads_little_ahead(tmp_path):
  line = " ".join(WORDS) + "\n"
  (tmp_path / "train.txt").write_text(line * (1_000_000 // len(line) + 1))
  (tmp_path / "val.txt").write_text(line * 3)
  cfg = experiment_config(tmp_path / "data", sequence_length=64, batch_size=12)
  cfg.data.source, cfg.data.doc_split = "files", "file"
  cfg.data.train_files, cfg.data.eval_files = str(tmp_path / "train.txt"), str(tmp_path / "val.txt")
  cfg.data.shuffle_buffer = 1024
  sources.make_corpus(cfg.data, "train")  # prepared once, as a previous run would have
  tokenizer = _CountingTokenizer(make_tokenizer(cfg.data))

  start, start_cpu = time.perf_counter(), time.process_time()
  it = make_pipeline(cfg, "train", tokenizer=tokenizer)
  batch = next(it)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu

  assert batch["inputs"].shape == (12, 64) and batch["loss_weights"].all()
  # CPU time of this process (all its threads) does not depend on other processes' load; the
  # wall-clock bound only catches gross regressions (the window shuffle once took ~40 s).
  assert cpu_seconds <= 2.0, f"first batch after {cpu_seconds:.1f} s of CPU"
  assert seconds <= 10.0, f"first batch after {seconds:.1f} s"
  # The 1 MB document repeats forever; only a few repetitions may be tokenized (and held) ahead.
  assert tokenizer.calls <= 8, tokenizer.calls
