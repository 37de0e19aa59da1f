"""Documents of a task from local files: JSONL / CSV / TSV, TFDS, and three benchmark layouts.

  mmlu_csv         MMLU's data/{dev,test}/<subject>_test.csv: no header; question, four choices,
                   the answer letter -> {"question", "choices", "answer" (index)}
  hellaswag_jsonl  HellaSwag's hellaswag_{train,val}.jsonl (ctx_a, ctx_b, activity_label, endings,
                   label) -> {"query", "choices", "gold"}, cleaned as lm-evaluation-harness does
  gsm8k_jsonl      GSM8K's {train,test}.jsonl (question, answer ending in '#### N') as they are

Every document gets `_where` ('path:line') for error messages.
"""

import csv
import os
import re

from llm_jax.data import task_files

FORMATS = ("auto", "jsonl", "csv", "tsv", "mmlu_csv", "hellaswag_jsonl", "gsm8k_jsonl", "tfds")
MMLU_LETTERS = ("A", "B", "C", "D")


def _with_where(rows: list[dict], path: str) -> list[dict]:
  return [{**row, "_where": f"{path}:{i + 1}"} for i, row in enumerate(rows)]


def read_mmlu_csv(path: str) -> list[dict]:
  docs = []
  with open(path, encoding="utf-8", newline="") as f:
    for i, row in enumerate(csv.reader(f)):
      if len(row) != 6:
        raise ValueError(f"{path}:{i + 1}: an MMLU row has 6 columns (question, A, B, C, D, "
                         f"answer), this one {len(row)}")
      answer = row[5].strip()
      if answer not in MMLU_LETTERS:
        raise ValueError(f"{path}:{i + 1}: answer {answer!r} is not one of {MMLU_LETTERS}")
      docs.append({"question": row[0], "choices": row[1:5],
                   "answer": MMLU_LETTERS.index(answer), "_where": f"{path}:{i + 1}"})
  return docs


def hellaswag_clean(text: str) -> str:
  """lm-evaluation-harness' hellaswag `preprocess`."""
  text = text.strip().replace(" [title]", ". ")
  text = re.sub(r"\[.*?\]", "", text)
  return text.replace("  ", " ")


def read_hellaswag_jsonl(path: str) -> list[dict]:
  docs = []
  for row in _with_where(task_files.read_file_rows(path, "jsonl"), path):
    for field in ("ctx_a", "ctx_b", "activity_label", "endings", "label"):
      if field not in row:
        raise ValueError(f"{row['_where']}: a HellaSwag row needs field {field!r}")
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    docs.append({"query": hellaswag_clean(row["activity_label"] + ": " + context),
                 "choices": [hellaswag_clean(e) for e in row["endings"]],
                 "gold": int(row["label"]), "_where": row["_where"]})
  return docs


def read_gsm8k_jsonl(path: str) -> list[dict]:
  docs = _with_where(task_files.read_file_rows(path, "jsonl"), path)
  for doc in docs:
    for field in ("question", "answer"):
      if field not in doc:
        raise ValueError(f"{doc['_where']}: a GSM8K row needs field {field!r}")
  return docs


def read_tfds(name: str, split: str, data_dir: str | None) -> list[dict]:
  import ml_collections  # pylint: disable=g-import-not-at-top
  data = ml_collections.ConfigDict({"tfds_name": name, "tfds_data_dir": data_dir,
                                    "tfds_download": False})
  rows = task_files.tfds_rows(data, split)
  return [{**row, "_where": row.get(task_files.PROVENANCE, f"tfds:{name}/{split}[{i}]")}
          for i, row in enumerate(rows)]


def read_docs(path: str, fmt: str = "auto") -> list[dict]:
  """The documents of one local file in format `fmt` (see FORMATS; 'auto' by the extension)."""
  if fmt not in FORMATS or fmt == "tfds":
    raise ValueError(f"format={fmt!r}: expected one of {[f for f in FORMATS if f != 'tfds']}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"task data file {path!r} does not exist")
  readers = {"mmlu_csv": read_mmlu_csv, "hellaswag_jsonl": read_hellaswag_jsonl,
             "gsm8k_jsonl": read_gsm8k_jsonl}
  if fmt in readers:
    docs = readers[fmt](path)
  else:
    docs = _with_where(task_files.read_file_rows(path, fmt), path)
  if not docs:
    raise ValueError(f"task data file {path!r} holds no documents")
  return docs
