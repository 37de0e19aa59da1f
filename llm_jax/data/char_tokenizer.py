"""Character tokenizer: the sorted characters of the training text, as nanoGPT's prepare.py.

Ids: 0 .. n-1 the n characters in sorted order (so id i is nanoGPT's `stoi` of the same
text), then <pad> n, </s> n+1 and <unk> n+2 (characters outside the vocabulary). The
vocabulary is a JSON file, so evaluation and generation reuse the one training built.
"""

import json
import os
from collections.abc import Iterable

from llm_jax.objectives import SpecialTokens

SPECIAL_PIECES = ("<pad>", "</s>", "<unk>")


class CharTokenizer:

  def __init__(self, chars: str):
    if not chars:
      raise ValueError("CharTokenizer needs at least one character; the training text is empty")
    if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
      raise ValueError("CharTokenizer chars must be distinct and sorted")
    self.chars = chars
    self._ids = {c: i for i, c in enumerate(chars)}
    n = len(chars)
    self.vocab_size = n + len(SPECIAL_PIECES)
    self.unk_id = n + 2
    self.specials = SpecialTokens(vocab_size=self.vocab_size, pad_id=n, eos_id=n + 1)
    self._pieces = {n + i: p for i, p in enumerate(SPECIAL_PIECES)}

  @classmethod
  def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
    seen = set()
    for text in texts:
      seen.update(text)
    return cls("".join(sorted(seen)))

  @classmethod
  def load(cls, path: str) -> "CharTokenizer":
    try:
      with open(path, encoding="utf-8") as f:
        return cls(json.load(f)["chars"])
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f"data.tokenizer_path={path!r} is not a character vocabulary "
                       f"(a JSON file with a 'chars' string): {e}") from e

  def save(self, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as f:
      json.dump({"chars": self.chars}, f, ensure_ascii=False)
    os.replace(partial, path)

  def encode(self, text: str) -> list[int]:
    ids, unk = self._ids, self.unk_id
    return [ids.get(c, unk) for c in text]

  def decode(self, ids) -> str:
    """Text of `ids`; special tokens other than padding are written by name."""
    n = len(self.chars)
    out = []
    for i in (int(i) for i in ids):
      if 0 <= i < n:
        out.append(self.chars[i])
      elif i != self.specials.pad_id:
        out.append(self._pieces.get(i, f"<unk_{i}>"))
    return "".join(out)


def cached_char_tokenizer(texts: Iterable[str], corpus_id: str, cache_dir: str) -> CharTokenizer:
  """The vocabulary of `texts`, built once per corpus and then read from `cache_dir`."""
  path = os.path.join(cache_dir, f"char_{corpus_id}.json")
  if os.path.exists(path):
    return CharTokenizer.load(path)
  tokenizer = CharTokenizer.from_texts(texts)
  tokenizer.save(path)
  return tokenizer
