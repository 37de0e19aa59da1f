"""data.doc_split='stream': contiguous windows of one token stream, or nanoGPT's random windows."""

import numpy as np

from llm_jax.data import make_pipeline, make_tokenizer
from llm_jax.data.stream_windows import StreamWindows, stream_tokens
from data_helpers import experiment_config, write_corpus


def _stream_config(tmp_path, text, random_windows=False, sequence_length=16):
  (tmp_path / "train.txt").write_text(text)
  (tmp_path / "val.txt").write_text(text[::-1])
  cfg = experiment_config(tmp_path / "data", sequence_length=sequence_length, batch_size=4)
  cfg.data.source, cfg.data.doc_split = "files", "stream"
  cfg.data.train_files, cfg.data.eval_files = str(tmp_path / "train.txt"), str(tmp_path / "val.txt")
  cfg.data.random_windows = random_windows
  return cfg


def _rows(batches):
  """Each real row's tokens: the first input then every target (the CLM window)."""
  rows = []
  for batch in batches:
    for inputs, targets, weights in zip(batch["inputs"], batch["targets"], batch["loss_weights"]):
      n = int(weights.sum())
      if n:
        rows.append(np.concatenate([inputs[:1], targets[:n]]))
  return rows


def test_eval_windows_concatenate_to_the_text(tmp_path):
  text = "".join(f"line {i}: the quick brown fox\n" for i in range(23))  # not a multiple of 17
  cfg = _stream_config(tmp_path, text)
  tokenizer = make_tokenizer(cfg.data)
  rows = _rows(make_pipeline(cfg, "eval"))
  assert [len(r) for r in rows[:-1]] == [17] * (len(rows) - 1)  # raw_length = sequence_length + 1
  assert tokenizer.decode(np.concatenate(rows)) == text[::-1]


def test_train_windows_cover_each_epoch_once_in_a_new_order(tmp_path):
  text = "".join(f"{i:04d} " for i in range(200))
  cfg = _stream_config(tmp_path, text)
  windows = StreamWindows(np.arange(len(text), dtype=np.int32), 17, random_offsets=False,
                          shuffle=True, seed=3, num_epochs=None, name="t")
  n = windows.windows_per_epoch
  first = [windows[i]["tokens"][0] for i in range(n)]
  second = [windows[i]["tokens"][0] for i in range(n, 2 * n)]
  assert sorted(first) == sorted(second) == list(range(0, len(text), 17))
  assert first != second
  it = make_pipeline(cfg, "train")
  rows = _rows([next(it) for _ in range(3)])
  tokenizer = make_tokenizer(cfg.data)
  assert all(tokenizer.decode(r) in text for r in rows)


def test_random_windows_are_any_offset_and_resume_exactly(tmp_path):
  text = "".join(f"{i:04d} " for i in range(300))
  cfg = _stream_config(tmp_path, text, random_windows=True)
  tokenizer = make_tokenizer(cfg.data)
  it = make_pipeline(cfg, "train")
  rows = _rows([next(it) for _ in range(6)])
  offsets = [text.index(tokenizer.decode(r)) for r in rows]
  assert len(set(o % 17 for o in offsets)) > 3  # not aligned to the window grid
  state = it.get_state()
  expected = next(it)
  resumed = make_pipeline(cfg, "train")
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["inputs"], expected["inputs"])


def test_documents_join_with_eos():
  tokens = stream_tokens(["ab", "c"], lambda t: [ord(c) for c in t], eos_id=1)
  assert tokens.tolist() == [97, 98, 1, 99]


def test_stream_of_a_multi_file_corpus(tmp_path):
  cfg = experiment_config(tmp_path / "data", files_glob=write_corpus(tmp_path / "c"))
  cfg.data.doc_split = "stream"
  batch = next(make_pipeline(cfg, "train"))
  assert batch["loss_weights"].all()  # every window is full: no padding
