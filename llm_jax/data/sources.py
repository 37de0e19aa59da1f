"""Random-access document sources: the stdlib corpus, a glob of text files, a TFDS dataset."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import tensorflow_datasets as tfds

from llm_jax.data import corpus_check
from llm_jax.data import text_files

SOURCES = ("stdlib", "files", "tfds")


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Documents of one split: `source[i][text_feature]` is a str or UTF-8 bytes."""

  source: Sequence[Any]
  text_feature: str
  corpus_id: str  # Names the corpus and its preparation; keys caches derived from it.


def _check_split(builder: tfds.core.DatasetBuilder, split: str):
  splits = list(builder.info.splits.keys())
  if splits and split not in splits:
    raise ValueError(f"Split {split!r} not in dataset {builder.info.full_name!r} (splits: {splits})")


def _catalog_corpus(cfg: ml_collections.ConfigDict, split: str) -> Corpus:
  name = cfg.tfds_name
  if not name:
    raise ValueError("data.source='tfds' needs data.tfds_name (e.g. 'lm1b')")
  data_dir = os.path.expanduser(cfg.tfds_data_dir) if cfg.tfds_data_dir else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f"Unknown TFDS dataset data.tfds_name={name!r} (or its builder needs TensorFlow, which is "
        "not installed)") from e
  features = builder.info.features
  if cfg.text_feature not in features:
    raise ValueError(
        f"TFDS dataset {name!r} has no feature data.text_feature={cfg.text_feature!r}; "
        f"its features are {sorted(features.keys())}")
  if cfg.tfds_download and not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  try:
    source = builder.as_data_source(split)
  except (NotImplementedError, ValueError) as e:
    if not os.path.exists(builder.data_dir):
      raise FileNotFoundError(
          f"TFDS dataset {name!r} is not prepared under {builder.data_dir}. Prepare it as array_record "
          f"(`tfds build {name} --file_format=array_record`, or set data.tfds_download=True)") from e
    raise ValueError(
        f"TFDS dataset {name!r} at {builder.data_dir} is stored as {builder.info.file_format.value}; "
        "reading that needs TensorFlow, which is not installed. Re-prepare it with "
        f"`tfds build {name} --file_format=array_record` (or use another data_dir).") from e
  _check_split(builder, split)
  return Corpus(source, cfg.text_feature, f"tfds_{builder.info.full_name}_{cfg.text_feature}")


def _files_builder(cfg: ml_collections.ConfigDict) -> text_files.TextFiles:
  """data.files_glob with a hashed split, else data.train_files / data.eval_files as the splits
  (a fine-tuning config may hold its task's files there beside a files_glob corpus)."""
  if not cfg.files_glob and (cfg.train_files or cfg.eval_files):
    root, paths, eval_paths = text_files.split_files(cfg.train_files, cfg.eval_files)
    paths = corpus_check.checked_paths(root, paths, cfg.undecodable_files)
    eval_paths = [p for p in eval_paths if p in paths]
    return text_files.text_files_builder(root, paths, cfg.doc_split, cfg.validation_fraction,
                                         cfg.data_dir, name_prefix="files", eval_paths=eval_paths)
  if not cfg.files_glob:
    raise ValueError("data.source='files' needs data.files_glob, or data.train_files and "
                     "data.eval_files")
  root, paths = text_files.glob_files(cfg.files_glob)
  paths = corpus_check.checked_paths(root, paths, cfg.undecodable_files)
  return text_files.text_files_builder(root, paths, cfg.doc_split, cfg.validation_fraction,
                                       cfg.data_dir, name_prefix="files")


def make_corpus(cfg: ml_collections.ConfigDict, split: str) -> Corpus:
  """The documents of `split` for the config's `data` section."""
  if cfg.source == "tfds":
    return _catalog_corpus(cfg, split)
  if cfg.source == "stdlib":
    builder = text_files.stdlib_builder(cfg.data_dir, cfg.validation_fraction)
  elif cfg.source == "files":
    builder = _files_builder(cfg)
  else:
    raise ValueError(f"data.source must be one of {SOURCES}, got {cfg.source!r}")
  _check_split(builder, split)
  return Corpus(builder.as_data_source(split), "text", builder.builder_config.name)


def document_text(corpus: Corpus, example: dict) -> str:
  text = example[corpus.text_feature]
  return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
