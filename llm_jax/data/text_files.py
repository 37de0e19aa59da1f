"""A TFDS builder over local text files, prepared as array_record (no TensorFlow needed).

One document per file, per line or per blank-line paragraph ('stream' keeps one document
per file; the pipeline joins them into one token stream). Documents go to 'train' or
'validation' by a hash of their key (relative path, plus the document's index within the
file when a file holds several), so the split never changes when files are added; or, given
`eval_paths`, by file: those files are the validation split and every other file is 'train'.
"""

import dataclasses
import fcntl
import glob
import hashlib
import os
import re
import sys
import sysconfig

import tensorflow_datasets as tfds

DOC_SPLITS = ("file", "line", "paragraph", "stream")
_WHOLE_FILE_SPLITS = ("file", "stream")
_EXCLUDED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  root: str = ""
  paths: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # Relative to root.
  doc_split: str = "file"
  validation_fraction: float = 0.02
  eval_paths: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # Explicit validation files.


def split_documents(text: str, doc_split: str) -> list[str]:
  if doc_split in _WHOLE_FILE_SPLITS:
    docs = [text]
  elif doc_split == "line":
    docs = text.splitlines()
  elif doc_split == "paragraph":
    docs = [p.strip("\n") for p in re.split(r"\n[ \t]*\n", text)]
  else:
    raise ValueError(f"data.doc_split must be one of {DOC_SPLITS}, got {doc_split!r}")
  return [d for d in docs if d.strip()]


def _read_text(path: str) -> str:
  with open(path, "rb") as f:
    return f.read().decode("utf-8", errors="replace")


def _unit_hash(key: str) -> float:
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2**64


class TextFiles(tfds.core.GeneratorBasedBuilder):
  """Documents from local text files; build with `text_files_builder`."""

  name = "llm_jax_text_files"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Text documents with a hashed train/validation split."}
  code_path = None  # No checksums or metadata files next to this module (and no resource lookup).

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Documents from local text files.",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "path": tfds.features.Text()}),
    )

  def _document_keys(self) -> list[str]:
    config = self.builder_config
    keys = []
    for rel in config.paths:
      docs = split_documents(_read_text(os.path.join(config.root, rel)), config.doc_split)
      if config.doc_split in _WHOLE_FILE_SPLITS:
        keys += [rel] * len(docs)
      else:
        keys += [f"{rel}#{i}" for i in range(len(docs))]
    return keys

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    keys = self._document_keys()
    if config.eval_paths:
      return self._file_split_generators(keys)
    if len(keys) < 2:
      raise ValueError(
          f"Empty corpus: the files under {config.root!r} hold {len(keys)} non-blank documents "
          f"(doc_split={config.doc_split!r}); at least 2 are needed for a train and a validation split."
      )
    validation = {k for k in keys if _unit_hash(k) < config.validation_fraction}
    if not validation:  # A tiny corpus still gets one validation document.
      validation = {min(keys, key=_unit_hash)}
    if len(validation) == len(keys):
      validation.discard(max(keys, key=_unit_hash))
    return {
        "train": self._generate_examples(validation, want_validation=False),
        "validation": self._generate_examples(validation, want_validation=True),
    }

  def _file_split_generators(self, keys: list[str]):
    config = self.builder_config
    eval_paths = set(config.eval_paths)
    validation = {k for k in keys if k.split("#")[0] in eval_paths}
    for split, field, count in (("train", "data.train_files", len(keys) - len(validation)),
                                ("validation", "data.eval_files", len(validation))):
      if not count:
        raise ValueError(f"{field}: its files under {config.root!r} hold no non-blank documents "
                         f"(doc_split={config.doc_split!r}) for the {split!r} split")
    return {
        "train": self._generate_examples(validation, want_validation=False),
        "validation": self._generate_examples(validation, want_validation=True),
    }

  def _generate_examples(self, validation: set[str], want_validation: bool):
    config = self.builder_config
    for rel in config.paths:
      docs = split_documents(_read_text(os.path.join(config.root, rel)), config.doc_split)
      for i, doc in enumerate(docs):
        key = rel if config.doc_split in _WHOLE_FILE_SPLITS else f"{rel}#{i}"
        if (key in validation) == want_validation:
          yield key, {"text": doc, "path": rel}


def stdlib_files() -> tuple[str, list[str]]:
  """This interpreter's standard-library `*.py` files, without tests and site-packages."""
  root = sysconfig.get_paths()["stdlib"]
  paths = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_STDLIB_DIRS)
    rel_dir = os.path.relpath(dirpath, root)
    for name in sorted(filenames):
      if name.endswith(".py"):
        paths.append(os.path.normpath(os.path.join(rel_dir, name)))
  return root, paths


def glob_files(pattern: str) -> tuple[str, list[str]]:
  matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
  if not matches:
    raise ValueError(f"data.files_glob={pattern!r} matches no files")
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches])
  return root, [os.path.relpath(os.path.abspath(p), root) for p in matches]


def _listing_hash(root: str, paths: list[str], *settings) -> str:
  h = hashlib.sha256(repr(settings).encode())
  for rel in paths:
    st = os.stat(os.path.join(root, rel))
    h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:12]


def split_files(train_pattern: str, eval_pattern: str) -> tuple[str, list[str], list[str]]:
  """(root, all paths, validation paths) for data.train_files / data.eval_files globs."""
  if not train_pattern or not eval_pattern:
    raise ValueError("data.train_files and data.eval_files must both be set to name the splits of "
                     f"a 'files' corpus; got train_files={train_pattern!r}, eval_files={eval_pattern!r}")
  train = _matching_files(train_pattern, "data.train_files")
  validation = _matching_files(eval_pattern, "data.eval_files")
  shared = sorted(set(train) & set(validation))
  if shared:
    raise ValueError(f"data.train_files={train_pattern!r} and data.eval_files={eval_pattern!r} both "
                     f"match {shared[:3]}: a file must belong to one split only")
  everything = sorted(train + validation)
  root = os.path.commonpath([os.path.dirname(p) for p in everything])
  return (root, [os.path.relpath(p, root) for p in everything],
          [os.path.relpath(p, root) for p in validation])


def _matching_files(pattern: str, field: str) -> list[str]:
  """Absolute paths matching `pattern` (comma-separated globs, '**' recursive)."""
  matches = set()
  for part in (p.strip() for p in pattern.split(",")):
    found = [os.path.abspath(p) for p in glob.glob(os.path.expanduser(part), recursive=True)
             if os.path.isfile(p)]
    if not found:
      raise ValueError(f"{field}={part!r} matches no files")
    matches.update(found)
  return sorted(matches)


def text_files_builder(root: str, paths: list[str], doc_split: str, validation_fraction: float,
                       data_dir: str, name_prefix: str, eval_paths: tuple[str, ...] = ()) -> TextFiles:
  """A prepared builder over `paths`; prepared once, then reused from `data_dir`.

  With `eval_paths` (a subset of `paths`) those files are the validation split and
  validation_fraction is not used.
  """
  if doc_split not in DOC_SPLITS:
    raise ValueError(f"data.doc_split must be one of {DOC_SPLITS}, got {doc_split!r}")
  if eval_paths:
    validation_fraction = 0.0
  elif not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"data.validation_fraction must be in (0, 1), got {validation_fraction} "
                     "(0 needs explicit validation files: data.train_files and data.eval_files)")
  eval_paths = tuple(sorted(eval_paths))
  settings = (doc_split, validation_fraction) + ((eval_paths,) if eval_paths else ())
  digest = _listing_hash(root, paths, *settings)
  config = TextFilesConfig(
      name=f"{name_prefix}_{doc_split}_{digest}", root=root, paths=tuple(paths),
      doc_split=doc_split, validation_fraction=validation_fraction, eval_paths=eval_paths,
      description=f"{len(paths)} files under {root}",
  )
  tfds_dir = os.path.join(os.path.expanduser(data_dir), "tfds")
  os.makedirs(tfds_dir, exist_ok=True)
  builder = TextFiles(config=config, data_dir=tfds_dir, file_format="array_record")
  with open(os.path.join(tfds_dir, f".{config.name}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # One process prepares; the others wait, then reuse.
    if not builder.is_prepared():
      builder.download_and_prepare()
  return builder


def stdlib_builder(data_dir: str, validation_fraction: float = 0.02) -> TextFiles:
  root, paths = stdlib_files()
  version = "_".join(str(v) for v in sys.version_info[:3])
  return text_files_builder(root, paths, "file", validation_fraction, data_dir,
                            name_prefix=f"stdlib_{sys.implementation.name}{version}")
