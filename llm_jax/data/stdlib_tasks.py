r"""Small real task datasets from this interpreter's standard library, as JSONL files.

    python -m llm_jax.data.stdlib_tasks --out=/tmp/stdlib_tasks

Functions and methods are read with `ast` from the standard-library *.py files (no tests, no
site-packages: text_files.stdlib_files); the same interpreter always writes the same bytes.
Rows go to train.jsonl or validation.jsonl by a hash of the function's qualified name
('module:Class.method'), VALIDATION_FRACTION of them to validation.

  docstring_to_name/      seq2seq  {"input": docstring, "target": function name}
  function_module/        classification  {"text": source code, "label": top-level module}
                          over MODULES (label names = module names, in task.labels order)
  docstring_summary/      sft  {"prompt": "Write the first line of the docstring of ...",
                          "response": that line}
  function_module_cloze/  cloze: function_module's rows; verbalizers " asyncio", ...

TASK_SETTINGS[dataset] holds the task config fields each dataset needs (apply_to_config).
"""

import ast
import dataclasses
import functools
import hashlib
import json
import os
import sys
import textwrap

from absl import app
from absl import flags

from llm_jax import cli_flags
from llm_jax.data import task_files
from llm_jax.data import text_files

VALIDATION_FRACTION = 0.1
MODULES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")
CLOZE_TEMPLATE = "{text}\n# This function is from the Python module:"
VERBALIZERS = tuple(f" {m}" for m in MODULES)
MAX_TEXT_CHARS = 1500
MAX_DOCSTRING_CHARS = 600
DATASETS = ("docstring_to_name", "function_module", "docstring_summary", "function_module_cloze")
TASK_SETTINGS = {
    "docstring_to_name": {"name": "seq2seq", "input_field": "input", "target_field": "target"},
    "function_module": {"name": "classification", "text_field": "text", "label_field": "label",
                        "labels": MODULES},
    "docstring_summary": {"name": "sft", "prompt_field": "prompt", "response_field": "response",
                          "template": "{prompt}\n"},
    "function_module_cloze": {"name": "cloze", "text_field": "text", "label_field": "label",
                              "labels": MODULES, "verbalizers": VERBALIZERS,
                              "cloze_template": CLOZE_TEMPLATE},
}


@dataclasses.dataclass(frozen=True)
class Function:
  module: str  # dotted, e.g. 'email.utils'
  qualname: str  # e.g. 'Message.get_payload'
  signature: str  # the arguments, e.g. 'self, i=None, decode=False'
  docstring: str  # cleaned ('' if none)
  source: str  # dedented source code

  @property
  def name(self) -> str:
    return self.qualname.rsplit(".", 1)[-1]

  @property
  def top_module(self) -> str:
    return self.module.split(".", 1)[0]

  @property
  def key(self) -> str:
    return f"{self.module}:{self.qualname}"


def _module_name(rel_path: str) -> str:
  parts = rel_path[:-len(".py")].split(os.sep)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _definitions(body, prefix: str):
  """(node, qualname) of the functions and methods in `body` (also under if / try blocks)."""
  for node in body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node, prefix + node.name
    elif isinstance(node, ast.ClassDef):
      yield from _definitions(node.body, f"{prefix}{node.name}.")
    elif isinstance(node, (ast.If, ast.Try, getattr(ast, "TryStar", ast.Try))):
      for block in (node.body, node.orelse, getattr(node, "handlers", []), getattr(node, "finalbody", [])):
        for item in block:
          yield from _definitions(item.body if isinstance(item, ast.ExceptHandler) else [item], prefix)


def module_functions(source: bytes, module: str) -> list[Function]:
  """The functions and methods of one module's source (nested functions are left out)."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  text = source.decode("utf-8", errors="replace")
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # As ast counts lines.
  out = []
  for node, qualname in _definitions(tree.body, ""):
    code = "\n".join(lines[node.lineno - 1:node.end_lineno])  # Whole lines, without decorators.
    out.append(Function(module, qualname, ast.unparse(node.args), ast.get_docstring(node) or "",
                        textwrap.dedent(code)))
  return out


@functools.lru_cache(maxsize=2)
def stdlib_functions(root: str | None = None, paths: tuple[str, ...] | None = None
                     ) -> tuple[Function, ...]:
  """Every function of the stdlib files (or `paths` under `root`), the first per qualified name."""
  if root is None:
    root, found = text_files.stdlib_files()
    paths = tuple(found) if paths is None else paths
  seen, out = set(), []
  for rel in paths:
    with open(os.path.join(root, rel), "rb") as f:
      functions = module_functions(f.read(), _module_name(rel))
    for function in functions:
      if function.key not in seen:
        seen.add(function.key)
        out.append(function)
  return tuple(out)


def is_validation(key: str, fraction: float = VALIDATION_FRACTION) -> bool:
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _is_dunder(name: str) -> bool:
  return name.startswith("__") and name.endswith("__")


def _write_split(out_dir: str, dataset: str, rows: list[tuple[str, dict]]) -> dict[str, str]:
  """rows: (key, row) pairs; writes train.jsonl / validation.jsonl; returns {split: path}."""
  folder = os.path.join(out_dir, dataset)
  os.makedirs(folder, exist_ok=True)
  paths = {"train": os.path.join(folder, "train.jsonl"),
           "validation": os.path.join(folder, "validation.jsonl")}
  splits = {"train": [], "validation": []}
  for key, row in rows:
    splits["validation" if is_validation(key) else "train"].append(row)
  for split, split_rows in splits.items():
    with open(paths[split], "w", encoding="utf-8", newline="\n") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
  return paths


def _documented(functions) -> list[Function]:
  return [f for f in functions if f.docstring.strip() and not _is_dunder(f.name)]


def docstring_to_name_rows(functions=None) -> list[tuple[str, dict]]:
  rows, seen = [], set()
  for f in _documented(functions or stdlib_functions()):
    row = {"input": f.docstring[:MAX_DOCSTRING_CHARS], "target": f.name}
    if (row["input"], row["target"]) not in seen:
      seen.add((row["input"], row["target"]))
      rows.append((f.key, row))
  return rows


def function_module_rows(functions=None) -> list[tuple[str, dict]]:
  """Functions of MODULES; a source text found under two labels is left out."""
  candidates = [f for f in functions or stdlib_functions() if f.top_module in MODULES]
  labels = {}
  for f in candidates:
    labels.setdefault(f.source[:MAX_TEXT_CHARS], set()).add(f.top_module)
  rows, seen = [], set()
  for f in candidates:
    text = f.source[:MAX_TEXT_CHARS]
    if len(labels[text]) == 1 and text not in seen:
      seen.add(text)
      rows.append((f.key, {"text": text, "label": f.top_module}))
  return rows


def docstring_summary_rows(functions=None) -> list[tuple[str, dict]]:
  rows = []
  for f in _documented(functions or stdlib_functions()):
    summary = f.docstring.strip().splitlines()[0].strip()
    if len(summary) < 8:
      continue
    prompt = (f"Write the first line of the docstring of the Python function "
              f"{f.qualname}({f.signature}) in module {f.module}.")
    rows.append((f.key, {"prompt": prompt, "response": summary}))
  return rows


def write_docstring_to_name(out_dir: str, functions=None) -> dict[str, str]:
  """seq2seq rows {"input": docstring, "target": name}; returns {'train': path, 'validation': path}."""
  return _write_split(out_dir, "docstring_to_name", docstring_to_name_rows(functions))


def write_function_module(out_dir: str, functions=None) -> dict[str, str]:
  """classification rows {"text": source, "label": module in MODULES}."""
  return _write_split(out_dir, "function_module", function_module_rows(functions))


def write_docstring_summary(out_dir: str, functions=None) -> dict[str, str]:
  """sft rows {"prompt": instruction, "response": the docstring's first line}."""
  return _write_split(out_dir, "docstring_summary", docstring_summary_rows(functions))


def write_function_module_cloze(out_dir: str, functions=None) -> dict[str, str]:
  """function_module's rows again, for task.name='cloze' with VERBALIZERS and CLOZE_TEMPLATE."""
  return _write_split(out_dir, "function_module_cloze", function_module_rows(functions))


WRITERS = {
    "docstring_to_name": write_docstring_to_name,
    "function_module": write_function_module,
    "docstring_summary": write_docstring_summary,
    "function_module_cloze": write_function_module_cloze,
}


def write_all(out_dir: str, functions=None) -> dict[str, dict[str, str]]:
  """Every dataset under out_dir: {dataset: {split: path}}."""
  functions = functions or stdlib_functions()
  return {name: writer(out_dir, functions) for name, writer in WRITERS.items()}


def apply_to_config(cfg, out_dir: str, dataset: str):
  """Points cfg.data.train_files / eval_files at a written dataset and sets its task fields."""
  if dataset not in TASK_SETTINGS:
    raise ValueError(f"unknown stdlib task dataset {dataset!r}; expected one of {DATASETS}")
  cfg.data.train_files = os.path.join(out_dir, dataset, "train.jsonl")
  cfg.data.eval_files = os.path.join(out_dir, dataset, "validation.jsonl")
  cfg.data.format = "jsonl"
  for key, value in TASK_SETTINGS[dataset].items():
    cfg.task[key] = value
  return cfg


def cached_path(name: str, data_dir: str, config_field: str) -> str:
  """The file of 'DATASET/SPLIT' (e.g. 'function_module/train') under data_dir, writing every
  dataset there first if needed (into a temporary folder, renamed when complete)."""
  dataset, _, split = name.partition("/")
  if dataset not in WRITERS or split not in ("train", "validation"):
    raise ValueError(f"{config_field}='stdlib:{name}': expected 'stdlib:DATASET/SPLIT' with "
                     f"DATASET one of {DATASETS} and SPLIT 'train' or 'validation'")
  version = ".".join(map(str, sys.version_info[:2]))
  root = os.path.join(os.path.expanduser(data_dir), "stdlib_tasks", f"python{version}")
  task_files.write_once(root, write_all)
  return os.path.join(root, dataset, f"{split}.jsonl")


def count_rows(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


FLAGS = cli_flags.flag_values(__name__)
_OUT = flags.DEFINE_string("out", None, "Directory to write the datasets into.", flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  written = write_all(os.path.expanduser(_OUT.value))
  for dataset, paths in written.items():
    counts = {split: count_rows(path) for split, path in paths.items()}
    print(f"{dataset:24s} task={TASK_SETTINGS[dataset]['name']:15s} train={counts['train']:6d} "
          f"validation={counts['validation']:5d}  {os.path.dirname(paths['train'])}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out", flag_values=FLAGS)
  app.run(main)
