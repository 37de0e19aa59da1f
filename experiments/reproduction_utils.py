"""Shared pieces of the paper reproductions: stand-in text, timed runs, tables and plots."""

import ast
import json
import os
import sysconfig
import time

from llm_jax.data import text_files
from llm_jax.training import loop
from llm_jax.training import metrics as metrics_lib


def stdlib_english_text(num_chars: int) -> str:
  """~num_chars of English prose: the ASCII docstrings of this interpreter's standard library.

  A stand-in for a 1 MB natural-language corpus (such as tiny Shakespeare) on a machine that
  has none; deterministic for a given Python version.
  """
  root, paths = text_files.stdlib_files()
  pieces, total = [], 0
  for rel in paths:
    try:
      tree = ast.parse(open(os.path.join(root, rel), encoding="utf-8").read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc and doc.isascii() and len(doc) > 200:
          pieces.append(doc.strip() + "\n\n")
          total += len(pieces[-1])
          if total >= num_chars:
            return "".join(pieces)[:num_chars]
  raise ValueError(f"the standard library under {sysconfig.get_paths()['stdlib']} has only "
                   f"{total} characters of ASCII docstrings, fewer than {num_chars}")


def timed_train(cfg, workdir):
  """(loop.train's result, wall seconds, metrics.jsonl rows) of one run in `workdir`."""
  start = time.perf_counter()
  result = loop.train(cfg, workdir)
  return result, time.perf_counter() - start, metrics_lib.read_rows(workdir)


def write_table(out_dir: str, stem: str, columns: list[str], rows: list[dict], summary: dict) -> dict:
  """Writes OUT/stem.json ({'rows', 'summary'}) and OUT/stem.md (a Markdown table + summary)."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
    json.dump({"rows": rows, "summary": summary}, f, indent=2, sort_keys=True)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
  lines += [""] + [f"- {key}: {_cell(value)}" for key, value in summary.items()]
  with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return {"json": os.path.join(out_dir, f"{stem}.json"), "md": os.path.join(out_dir, f"{stem}.md")}


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def pretrain_then_finetune(pretrain_cfg, finetune_cfg, workdir: str, name: str) -> dict:
  """Pretrains `pretrain_cfg` in workdir/name/pretrain, then fine-tunes `finetune_cfg` from its
  last checkpoint (train.init_from) in workdir/name/finetune; returns both runs' results."""
  pretrain_dir = os.path.join(workdir, name, "pretrain")
  finetune_dir = os.path.join(workdir, name, "finetune")
  pretrained, pretrain_seconds, _ = timed_train(pretrain_cfg, pretrain_dir)
  finetune_cfg.train.init_from = f"workdir:{pretrain_dir}"
  finetuned, finetune_seconds, rows = timed_train(finetune_cfg, finetune_dir)
  return {"pretrain": pretrained, "finetune": finetuned, "rows": rows,
          "seconds": pretrain_seconds + finetune_seconds}
