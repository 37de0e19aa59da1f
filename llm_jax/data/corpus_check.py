"""Corpus files that are not text: binary files and files that are not UTF-8.

Text files are read as UTF-8 with undecodable bytes replaced (U+FFFD), so one stray Latin-1 byte
costs one character. A file with NUL bytes, or with more than MAX_REPLACED_FRACTION of its
characters replaced, is not text: it is named in a warning with its counts, and
data.undecodable_files says what happens to it: 'warn' (trained on anyway), 'skip' (left out)
or 'error' (the run stops before anything is written).
"""

import dataclasses
import os

from absl import logging

POLICIES = ("warn", "skip", "error")
MAX_REPLACED_FRACTION = 0.001
SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Decoding:
  path: str
  characters: int
  replaced: int  # undecodable byte sequences, each replaced by U+FFFD
  nul_bytes: int

  @property
  def is_text(self) -> bool:
    return not self.nul_bytes and self.replaced <= MAX_REPLACED_FRACTION * max(self.characters, 1)

  def describe(self) -> str:
    return (f"{self.path} ({self.replaced} of {self.characters} characters undecodable as "
            f"UTF-8, {self.nul_bytes} NUL bytes)")


def decoding(path: str) -> Decoding:
  with open(path, "rb") as f:
    raw = f.read()
  text = raw.decode("utf-8", errors="replace")
  replaced = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
  return Decoding(path, len(text), replaced, raw.count(b"\0"))


def checked_paths(root: str, paths: list[str], policy: str) -> list[str]:
  """`paths` (relative to root) with the non-text files handled as `policy` says."""
  if policy not in POLICIES:
    raise ValueError(f"data.undecodable_files={policy!r}: expected one of {POLICIES}")
  bad = [d for d in (decoding(os.path.join(root, p)) for p in paths) if not d.is_text]
  if not bad:
    return paths
  listing = "; ".join(d.describe() for d in bad[:SHOWN])
  more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
  what = f"{len(bad)} of {len(paths)} corpus files are not UTF-8 text: {listing}{more}"
  if policy == "error":
    raise ValueError(f"{what} (data.undecodable_files='error'; 'skip' leaves them out)")
  if policy == "skip":
    logging.warning("%s; skipped (data.undecodable_files='skip')", what)
    bad_paths = {os.path.relpath(d.path, root) for d in bad}
    kept = [p for p in paths if p not in bad_paths]
    if not kept:
      raise ValueError(f"{what}: no text file is left (data.undecodable_files='skip')")
    return kept
  logging.warning("%s; trained on with the undecodable bytes replaced (data.undecodable_files="
                  "'skip' leaves them out, 'error' stops)", what)
  return paths
