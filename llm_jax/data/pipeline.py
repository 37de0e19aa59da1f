"""The grain input pipeline: documents -> tokens -> chunks -> objective -> packed rows -> batches.

    source (array_record) -> this process's share -> shuffle per epoch -> repeat
      -> tokenize (+ EOS per document) -> chunks of obj.raw_length -> window shuffle
      -> objective (rng from seed, process and example index) -> pack (segment ids,
      positions; padding is segment 0) -> README batch dict -> [global_batch // processes, L]

With data.doc_split='stream' the split is one token stream cut into windows of raw_length
(stream_windows.py) instead of documents cut into chunks; the objective and packing follow.

Every stage is a grain dataset, so `it.get_state()` / `it.set_state()` resume exactly.
Eval pipelines read their split once, unshuffled, and pad the last batch with empty rows
(segment id 0, loss weight 0).
"""

from typing import Any

import grain
import ml_collections
import numpy as np

from llm_jax.data import sources
from llm_jax.data import stream_windows
from llm_jax.data import task_files
from llm_jax.data.chunking import ChunkIterDataset
from llm_jax.data.window_shuffle import WindowShuffleIterDataset
from llm_jax.data.tokenizer import Tokenizer, make_tokenizer
from llm_jax.objectives import make_objective

_TOKEN_FIELDS = ("inputs", "targets", "decoder_inputs")
# Documents tokenized ahead of the chunker. Small, so that a corpus of a few long documents
# (repeated every epoch) is not tokenized and held hundreds of times over before the first batch.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
_RENAMES = {
    "inputs_segment_ids": "input_segment_ids",
    "inputs_positions": "input_positions",
    "decoder_inputs_segment_ids": "decoder_segment_ids",
    "decoder_inputs_positions": "decoder_positions",
}


def _tokenize(corpus: sources.Corpus, tokenizer: Tokenizer, split: str, index: int,
              example: dict) -> dict[str, Any]:
  ids = tokenizer.encode(sources.document_text(corpus, example))
  eos = tokenizer.specials.eos_id
  if eos is not None:
    ids.append(eos)
  path = example.get("path", b"")
  path = path.decode() if isinstance(path, bytes) else str(path)
  name = f"document {index} of split {split!r}" + (f" ({path})" if path else "")
  return {"tokens": np.asarray(ids, np.int32), "name": name}


class _ApplyObjective(grain.transforms.Map):

  def __init__(self, objective, seed: int, process_index: int):
    self._objective = objective
    self._seed = seed
    self._process_index = process_index

  def map(self, chunk: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self._seed, self._process_index, chunk["index"]])
    example = self._objective(chunk["tokens"], rng)
    lengths = self._objective.feature_lengths
    missing = set(lengths) - set(example)
    if missing:
      raise ValueError(f"The objective's example lacks features {sorted(missing)} of its feature_lengths")
    return {k: np.asarray(example[k]) for k in lengths}


def _to_batch_dict(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in row.items():
    if key in _RENAMES:
      out[_RENAMES[key]] = value
    elif not key.endswith(("_segment_ids", "_positions")):
      out[key] = value.astype(np.float32) if key == "loss_weights" else value.astype(np.int32)
  return out


def _pad_batch(batch: dict[str, np.ndarray], batch_size: int, pad_id: int) -> dict[str, np.ndarray]:
  """Fills a short last batch with empty rows: pad tokens, everything else 0 (segment ids, loss
  weights, class labels)."""
  padded = {}
  for key, value in batch.items():
    fill = pad_id if key in _TOKEN_FIELDS and value.ndim > 1 else 0
    extra = np.full((batch_size - len(value),) + value.shape[1:], fill, value.dtype)
    padded[key] = np.concatenate([value, extra])
  return padded


def pack_and_batch(ds: grain.IterDataset, lengths: dict[str, int] | None, data, batch_size: int,
                   is_train: bool, pad_id: int) -> grain.IterDataset:
  """Examples -> rows packed to `lengths` (None: each example is a row already) -> batches;
  eval batches padded to batch_size; grain workers if data.num_workers."""
  if lengths is not None:
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=data.num_packing_bins or batch_size,
        shuffle_bins=False, padding_struct={k: pad_id if k in _TOKEN_FIELDS else 0 for k in lengths},
        max_sequences_per_bin=None if data.pack else 1)
    ds = ds.map(_to_batch_dict)
  ds = ds.batch(batch_size, drop_remainder=is_train)
  if not is_train:
    ds = ds.map(lambda b: _pad_batch(b, batch_size, pad_id))
  if data.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))
  return ds


def make_dataset(cfg: ml_collections.ConfigDict, split: str = "train", process_index: int = 0,
                 process_count: int = 1, tokenizer: Tokenizer | None = None) -> grain.IterDataset:
  """The pipeline as a grain IterDataset of batch dicts (see the module docstring).

  A config whose task.name is not 'pretrain' gets the task pipeline (task_pipeline.py).
  """
  if cfg.get("task") is not None and cfg.task.name != "pretrain":
    from llm_jax.data import task_pipeline  # pylint: disable=g-import-not-at-top
    return task_pipeline.make_task_dataset(cfg, split, process_index, process_count, tokenizer)
  data = cfg.data
  tfds_split, is_train = task_files.split_name(cfg, split)
  global_batch = cfg.train.batch_size
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  if global_batch % process_count:
    raise ValueError(f"train.batch_size={global_batch} is not divisible by process_count={process_count}")
  batch_size = global_batch // process_count
  seed = data.seed if data.seed >= 0 else cfg.train.seed
  tokenizer = tokenizer or make_tokenizer(data)
  objective = make_objective(cfg.objective, tokenizer.specials, data.sequence_length,
                             target_length=data.target_length or None)

  corpus = sources.make_corpus(data, tfds_split)
  if data.doc_split == "stream":
    ds = _stream_windows(corpus, tokenizer, objective.raw_length, data, tfds_split, is_train, seed,
                         process_index, process_count)
    ds = ds.map(_ApplyObjective(objective, seed, process_index))
    return pack_and_batch(ds, dict(objective.feature_lengths), data, batch_size, is_train,
                          tokenizer.specials.pad_id)
  if len(corpus.source) < process_count:
    raise ValueError(f"Split {tfds_split!r} has {len(corpus.source)} documents, fewer than "
                     f"process_count={process_count}")
  ds = grain.MapDataset.source(corpus.source)
  ds = ds.map_with_index(lambda i, ex: _tokenize(corpus, tokenizer, tfds_split, i, ex))
  ds = ds[process_index::process_count]
  if is_train:
    if data.shuffle:
      ds = ds.shuffle(seed=seed)
    ds = ds.repeat(data.num_epochs or None)
  ds = ChunkIterDataset(ds.to_iter_dataset(_READ_OPTIONS), chunk_length=objective.raw_length,
                        overflow=data.overflow)
  if is_train and data.shuffle and data.shuffle_buffer > 1:
    ds = WindowShuffleIterDataset(ds, window_size=data.shuffle_buffer, seed=seed)
  ds = ds.map(_ApplyObjective(objective, seed, process_index))

  return pack_and_batch(ds, dict(objective.feature_lengths), data, batch_size, is_train,
                        tokenizer.specials.pad_id)


def _stream_windows(corpus, tokenizer, window_length, data, split, is_train, seed, process_index,
                    process_count) -> grain.IterDataset:
  """doc_split='stream': the split's documents as one token stream, cut into windows."""
  texts = (sources.document_text(corpus, corpus.source[i]) for i in range(len(corpus.source)))
  tokens = stream_windows.stream_tokens(texts, tokenizer.encode, tokenizer.specials.eos_id)
  windows = stream_windows.StreamWindows(
      tokens, window_length, random_offsets=data.random_windows, shuffle=is_train and data.shuffle,
      seed=seed, num_epochs=(data.num_epochs or None) if is_train else 1,
      name=f"split {split!r} of {corpus.corpus_id}")
  return stream_windows.stream_dataset(windows, process_index, process_count)


def make_pipeline(cfg: ml_collections.ConfigDict, split: str = "train", process_index: int = 0,
                  process_count: int = 1, tokenizer: Tokenizer | None = None) -> grain.DatasetIterator:
  """An iterator of batch dicts `[train.batch_size // process_count, L]` with get/set_state.

  `split` is 'train' (shuffled, repeated) or 'eval' (one unshuffled pass, last batch padded),
  or the configured split names data.train_split / data.eval_split.
  """
  return iter(make_dataset(cfg, split, process_index, process_count, tokenizer))
