"""Rows of fine-tuning data: JSONL / CSV / TSV files from globs, or a TFDS dataset.

Each row is a dict of the file's fields plus `row[PROVENANCE]`, where it came from: 'FILE:LINE'
for files (the line a CSV record starts on; the header is line 1) and 'tfds:NAME/SPLIT[i]' for
TFDS rows. Errors about a row name it: `where(row)`.

Which split reads what: 'train' (or data.train_split) reads data.train_files, 'eval' (or
data.eval_split) reads data.eval_files; with data.source='tfds' they read the TFDS splits
data.train_split / data.eval_split instead.
"""

import collections.abc
import csv
import glob
import gzip
import json
import os
import shutil
import tempfile
from typing import Any

import ml_collections
import numpy as np

PROVENANCE = "_provenance"
STDLIB_PREFIX = "stdlib:"  # 'stdlib:DATASET/SPLIT': a stdlib_tasks dataset, written on first use
ARITHMETIC_PREFIX = "arithmetic:"  # 'arithmetic:preferences/SPLIT': arithmetic_preferences
FORMATS = ("auto", "jsonl", "csv", "tsv")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".tsv": "tsv", ".tab": "tsv"}


def write_once(root: str, write) -> None:
  """Calls write(folder) into a temporary folder renamed to `root`, unless root exists."""
  if os.path.isdir(root):
    return
  os.makedirs(os.path.dirname(root), exist_ok=True)
  partial = tempfile.mkdtemp(prefix="writing_", dir=os.path.dirname(root))
  write(partial)
  try:
    os.rename(partial, root)
  except OSError:  # another process finished first
    shutil.rmtree(partial, ignore_errors=True)


def where(row: dict) -> str:
  """The row's provenance ('FILE:LINE', 'tfds:NAME/SPLIT[i]'), or 'a row' if it has none."""
  return str(row.get(PROVENANCE, "a row"))


class MissingFieldError(KeyError):
  """A row lacks a field the task reads; the message names the row's file and line."""

  def __str__(self) -> str:
    return str(self.args[0])


def missing_field(row: dict, field: str, config_field: str) -> MissingFieldError:
  fields = sorted(k for k in row if k != PROVENANCE)
  return MissingFieldError(f"{where(row)}: no field {field!r} ({config_field}); the row has {fields}")


def require_field(row: dict, field: str, config_field: str) -> Any:
  """row[field]; a MissingFieldError (a KeyError) naming the row's file:line, field and config field.

  A JSON null counts as missing.
  """
  value = row.get(field)
  if value is None:
    raise missing_field(row, field, config_field)
  return value


def split_name(cfg: ml_collections.ConfigDict, split: str) -> tuple[str, bool]:
  """(split name, is_train) for 'train', 'eval' or a configured split name (as pipeline.py)."""
  if split in ("train", cfg.data.train_split):
    return cfg.data.train_split, True
  if split in ("eval", cfg.data.eval_split):
    return cfg.data.eval_split, False
  raise ValueError(
      f"split must be 'train', 'eval', {cfg.data.train_split!r} or {cfg.data.eval_split!r}, got {split!r}")


def glob_task_files(pattern: str, config_field: str) -> list[str]:
  """Sorted files matching `pattern` (comma-separated globs allowed, '**' recursive)."""
  if not pattern:
    raise ValueError(f"{config_field} is empty: set it to a glob of JSONL / CSV / TSV files")
  paths = []
  for part in (p.strip() for p in pattern.split(",")):
    matches = sorted(p for p in glob.glob(os.path.expanduser(part), recursive=True)
                     if os.path.isfile(p))
    if not matches:
      raise ValueError(f"{config_field}={part!r} matches no files")
    paths += [p for p in matches if p not in paths]
  return paths


def file_format(path: str, fmt: str = "auto") -> str:
  """'jsonl', 'csv' or 'tsv': `fmt`, or for 'auto' the extension's (a '.gz' suffix is read through)."""
  if fmt not in FORMATS:
    raise ValueError(f"data.format must be one of {FORMATS}, got {fmt!r}")
  if fmt != "auto":
    return fmt
  stem = path[:-3] if path.endswith(".gz") else path
  ext = os.path.splitext(stem)[1].lower()
  if ext not in _EXTENSIONS:
    raise ValueError(f"{path}: cannot tell the format from the extension {ext!r} (known: "
                     f"{sorted(_EXTENSIONS)}); set data.format to 'jsonl', 'csv' or 'tsv'")
  return _EXTENSIONS[ext]


def _open_text(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
  return open(path, encoding="utf-8-sig", newline="")


def _jsonl_rows(path: str) -> list[dict]:
  rows = []
  with _open_text(path) as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_number}: malformed JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{line_number}: a JSONL row must be a JSON object, got "
                         f"{type(row).__name__}")
      row[PROVENANCE] = f"{path}:{line_number}"
      rows.append(row)
  return rows


def _delimited_rows(path: str, delimiter: str) -> list[dict]:
  rows = []
  with _open_text(path) as f:
    reader = csv.reader(f, delimiter=delimiter)
    header, start = None, 1
    for record in reader:
      line_number, start = start, reader.line_num + 1
      if not record or not any(v.strip() for v in record):
        continue
      if header is None:
        header = record
        continue
      if len(record) != len(header):
        raise ValueError(f"{path}:{line_number}: {len(record)} fields, but the header (line 1) "
                         f"has {len(header)}: {header}")
      row = dict(zip(header, record))
      row[PROVENANCE] = f"{path}:{line_number}"
      rows.append(row)
  if header is None:
    raise ValueError(f"{path}: empty file; a CSV / TSV file needs a header line of field names")
  return rows


def read_file_rows(path: str, fmt: str = "auto") -> list[dict]:
  """Every row of one file; a row's values are as the file holds them (CSV / TSV: strings)."""
  fmt = file_format(path, fmt)
  if fmt == "jsonl":
    return _jsonl_rows(path)
  return _delimited_rows(path, "," if fmt == "csv" else "\t")


def read_files(pattern: str, fmt: str = "auto", config_field: str = "data.train_files") -> list[dict]:
  """The rows of every file matching `pattern`, file by file in sorted order."""
  rows = []
  for path in glob_task_files(pattern, config_field):
    rows += read_file_rows(path, fmt)
  if not rows:
    raise ValueError(f"{config_field}={pattern!r}: the files hold no rows")
  return rows


def _plain(value: Any) -> Any:
  """A TFDS feature value as plain Python: bytes -> str, arrays -> lists, numpy scalars -> items."""
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.ndarray):
    return [_plain(v) for v in value] if value.ndim else _plain(value.item())
  if isinstance(value, np.generic):
    return _plain(value.item())
  if isinstance(value, dict):
    value = {k: _plain(v) for k, v in value.items()}
    columns = list(value.values())
    if columns and all(isinstance(c, list) for c in columns) and len({len(c) for c in columns}) == 1:
      # A Sequence of dicts (e.g. chat messages) comes as a dict of columns: back to rows.
      return [dict(zip(value, items)) for items in zip(*columns)]
    return value
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


class TfdsRows(collections.abc.Sequence):
  """Random-access rows of one TFDS split (array_record), converted to plain dicts on access."""

  def __init__(self, source, name: str, split: str):
    self._source = source
    self._label = f"tfds:{name}/{split}"

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"row {index} of {self._label}, which has {len(self)}")
    index %= len(self)
    row = {k: _plain(v) for k, v in self._source[index].items()}
    row[PROVENANCE] = f"{self._label}[{index}]"
    return row


def tfds_rows(data: ml_collections.ConfigDict, split: str) -> TfdsRows:
  """Rows of TFDS dataset data.tfds_name, split `split`, prepared as array_record (see sources.py)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = data.tfds_name
  if not name:
    raise ValueError("data.source='tfds' needs data.tfds_name for the task's rows")
  data_dir = os.path.expanduser(data.tfds_data_dir) if data.tfds_data_dir else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Unknown TFDS dataset data.tfds_name={name!r} (or its builder needs "
                     "TensorFlow, which is not installed)") from e
  if data.tfds_download and not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  splits = list(builder.info.splits.keys())
  if splits and split not in splits:
    raise ValueError(f"Split {split!r} not in dataset {builder.info.full_name!r} (splits: {splits})")
  try:
    source = builder.as_data_source(split)
  except (NotImplementedError, ValueError) as e:
    raise ValueError(
        f"TFDS dataset {name!r} at {builder.data_dir} cannot be read as array_record: prepare it "
        f"with `tfds build {name} --file_format=array_record` (or set data.tfds_download=True)") from e
  return TfdsRows(source, builder.info.full_name, split)


def read_task_rows(cfg: ml_collections.ConfigDict, split: str) -> collections.abc.Sequence[dict]:
  """The rows of `split` ('train' / 'eval' or a configured split name), each with its provenance.

  Files: a list read into memory. TFDS: a lazy random-access sequence.
  """
  name, is_train = split_name(cfg, split)
  if cfg.data.source == "tfds":
    return tfds_rows(cfg.data, name)
  config_field = "data.train_files" if is_train else "data.eval_files"
  pattern = cfg.data[config_field.split(".")[1]]
  if pattern.startswith(STDLIB_PREFIX):
    from llm_jax.data import stdlib_tasks  # pylint: disable=g-import-not-at-top
    pattern = stdlib_tasks.cached_path(pattern[len(STDLIB_PREFIX):], cfg.data.data_dir,
                                       config_field)
  elif pattern.startswith(ARITHMETIC_PREFIX):
    from llm_jax.data import arithmetic_preferences  # pylint: disable=g-import-not-at-top
    pattern = arithmetic_preferences.cached_path(pattern[len(ARITHMETIC_PREFIX):],
                                                 cfg.data.data_dir, config_field)
  return read_files(pattern, cfg.data.format, config_field)
