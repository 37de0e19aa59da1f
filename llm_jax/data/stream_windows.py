"""doc_split='stream': a split as one token stream cut into windows (nanoGPT's data layout).

Documents are joined with EOS between them (a single document is its tokens alone). Windows
are `window_length` tokens long: contiguous and non-overlapping (the last one may be shorter),
so that their concatenation is the stream, or at random offsets seeded by the example index,
as nanoGPT's get_batch draws them. Train windows repeat forever (or data.num_epochs times);
fixed windows are reordered by a fresh permutation each epoch.
"""

import functools
import sys

import grain
import numpy as np

_MIN_WINDOW = 2  # An objective needs at least an input and a target.


def stream_tokens(texts, encode, eos_id: int | None) -> np.ndarray:
  pieces = []
  for i, text in enumerate(texts):
    if i and eos_id is not None:
      pieces.append(np.asarray([eos_id], np.int32))
    pieces.append(np.asarray(encode(text), np.int32))
  return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


class StreamWindows:
  """index -> {'tokens': window, 'index': index}, for indices in [0, len(self))."""

  def __init__(self, tokens: np.ndarray, window_length: int, *, random_offsets: bool, shuffle: bool,
               seed: int, num_epochs: int | None, name: str):
    if len(tokens) < max(window_length if random_offsets else _MIN_WINDOW, _MIN_WINDOW):
      raise ValueError(f"{name} has {len(tokens)} tokens: too few for windows of {window_length} "
                       f"(data.doc_split='stream', random_windows={random_offsets})")
    self._tokens = tokens
    self._window = window_length
    self._random = random_offsets
    self._shuffle = shuffle
    self._seed = seed
    full, rest = divmod(len(tokens), window_length)
    self.windows_per_epoch = max(full, 1) if random_offsets else full + (rest >= _MIN_WINDOW)
    self._length = sys.maxsize if num_epochs is None else num_epochs * self.windows_per_epoch

  def __len__(self) -> int:
    return self._length

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self._seed, epoch]).permutation(self.windows_per_epoch)

  def __getitem__(self, index: int) -> dict:
    epoch, position = divmod(index, self.windows_per_epoch)
    if self._random:
      rng = np.random.default_rng([self._seed, index])
      start = int(rng.integers(0, len(self._tokens) - self._window + 1))
    else:
      if self._shuffle:
        position = int(self._permutation(epoch)[position])
      start = position * self._window
    return {"tokens": self._tokens[start:start + self._window], "index": index}


def stream_dataset(windows: StreamWindows, process_index: int, process_count: int) -> grain.IterDataset:
  """This process's windows (every process_count-th index) as a checkpointable IterDataset."""
  ds = grain.MapDataset.range(len(windows))[process_index::process_count].map(windows.__getitem__)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
