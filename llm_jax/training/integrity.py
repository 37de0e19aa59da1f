"""Checksums of a checkpoint's files: written when the save is complete, checked before restore.

Orbax and TensorStore checksum only the index of a zarr shard, not the array bytes, so a flipped
byte in `ocdbt.process_*/d/*` restores silently. The manifest holds the size and CRC-32 of every
file under the step directory; it is written inside the temporary directory just before Orbax
renames it to its final name, so every finalized checkpoint carries one. A checkpoint written
before manifests existed has none and is restored unverified (with a warning).
"""

import concurrent.futures
import json
import os
import zlib

MANIFEST = "llm_jax_checksums.json"
# Orbax rewrites these after finalization (commit time, markers); they hold no array data.
_UNCHECKED = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt"})
_CHUNK = 8 * 2**20
_THREADS = 8  # zlib.crc32 releases the GIL: files are read and summed in parallel.


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(directory: str) -> list[str]:
  """Paths relative to `directory` of its files, except the manifest and _UNCHECKED, sorted."""
  found = []
  for root, _, names in os.walk(directory):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), directory)
      if rel != MANIFEST and name not in _UNCHECKED:
        found.append(rel)
  return sorted(found)


def write_manifest(directory: str) -> dict:
  """Writes MANIFEST ({relative path: [size, crc32]}) into `directory`; returns it."""
  files = _files(directory)
  with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
    crcs = list(pool.map(lambda rel: _crc32(os.path.join(directory, rel)), files))
  entries = {rel: [os.path.getsize(os.path.join(directory, rel)), crc]
             for rel, crc in zip(files, crcs)}
  partial = os.path.join(directory, MANIFEST + ".partial")
  with open(partial, "w") as f:
    json.dump({"format": 1, "algorithm": "crc32", "files": entries}, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, os.path.join(directory, MANIFEST))
  return entries


def has_manifest(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, MANIFEST))


def verify(directory: str, shard: tuple[int, int] = (0, 1)) -> list[str]:
  """Problems found in `directory` against its manifest ([] when every file matches).

  `shard` = (index, count) checks only every count-th file from index (one share per
  process). Raises FileNotFoundError when there is no manifest.
  """
  with open(os.path.join(directory, MANIFEST)) as f:
    entries = json.load(f)["files"]
  index, count = shard
  names = sorted(entries)[index::count]

  def check(rel):
    path = os.path.join(directory, rel)
    size, crc = entries[rel]
    if not os.path.exists(path):
      return f"{rel}: missing"
    actual_size = os.path.getsize(path)
    if actual_size != size:
      return f"{rel}: {actual_size} bytes, {size} were written"
    actual_crc = _crc32(path)
    if actual_crc != crc:
      return f"{rel}: checksum {actual_crc:08x}, {crc:08x} was written (bytes changed on disk)"
    return None

  with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
    return [problem for problem in pool.map(check, names) if problem]
