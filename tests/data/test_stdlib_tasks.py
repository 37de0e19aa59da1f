"""Task datasets built from the standard library: deterministic, non-trivial, usable."""

import collections
import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llm_jax.config import base_config
from llm_jax.data import make_pipeline, stdlib_tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("stdlib_tasks"))
  return out, stdlib_tasks.write_all(out)


def _read(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_writers_return_their_files(written):
  out, paths = written
  assert set(paths) == set(stdlib_tasks.DATASETS)
  for dataset, split_paths in paths.items():
    assert split_paths == {"train": os.path.join(out, dataset, "train.jsonl"),
                           "validation": os.path.join(out, dataset, "validation.jsonl")}


def test_datasets_are_non_trivial(written):
  _, paths = written
  expected_fields = {"docstring_to_name": {"input", "target"}, "function_module": {"text", "label"},
                     "docstring_summary": {"prompt", "response"},
                     "function_module_cloze": {"text", "label"}}
  for dataset, split_paths in paths.items():
    train, validation = _read(split_paths["train"]), _read(split_paths["validation"])
    assert len(train) > 1000 and len(validation) > 100, dataset
    assert 0.05 < len(validation) / (len(train) + len(validation)) < 0.2
    assert all(set(r) == expected_fields[dataset] for r in train + validation)
    assert all(all(isinstance(v, str) and v for v in r.values()) for r in train + validation)
  labels = collections.Counter(r["label"] for r in _read(paths["function_module"]["train"]))
  assert set(labels) == set(stdlib_tasks.MODULES) and min(labels.values()) > 50
  assert set(r["label"] for r in _read(paths["function_module"]["validation"])) <= set(labels)
  names = [r["target"] for r in _read(paths["docstring_to_name"]["train"])]
  assert len(set(names)) > 1000 and all(n.isidentifier() for n in names)


def test_split_by_qualified_name_without_overlap(written):
  _, paths = written
  for dataset, key in (("docstring_to_name", ("input", "target")), ("function_module", ("text",))):
    train = {tuple(r[k] for k in key) for r in _read(paths[dataset]["train"])}
    validation = {tuple(r[k] for k in key) for r in _read(paths[dataset]["validation"])}
    assert not train & validation
  assert filecmp.cmp(paths["function_module"]["train"], paths["function_module_cloze"]["train"],
                     shallow=False)


def test_cli_writes_the_same_bytes(written, tmp_path):
  out, paths = written
  result = subprocess.run(
      [sys.executable, "-m", "llm_jax.data.stdlib_tasks", f"--out={tmp_path}"], cwd=REPO,
      env={**os.environ, "PYTHONPATH": REPO, "PYTHONHASHSEED": "123"}, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  for dataset, split_paths in paths.items():
    for split, path in split_paths.items():
      assert filecmp.cmp(path, os.path.join(tmp_path, dataset, f"{split}.jsonl"), shallow=False)
    count = len(_read(split_paths["train"]))
    assert f"{dataset}" in result.stdout and f"train={count:6d}" in result.stdout


@pytest.mark.parametrize("dataset, family", [("docstring_to_name", "encoder_decoder"),
                                             ("function_module", "encoder"),
                                             ("docstring_summary", "decoder"),
                                             ("function_module_cloze", "decoder")])
def test_datasets_feed_the_task_pipeline(written, dataset, family):
  out, _ = written
  cfg = base_config()
  cfg.model.family = family
  cfg.data.sequence_length = 128
  cfg.train.batch_size = 4
  stdlib_tasks.apply_to_config(cfg, out, dataset)
  assert cfg.task.name == stdlib_tasks.TASK_SETTINGS[dataset]["name"]
  batch = next(make_pipeline(cfg))
  assert batch["inputs"].shape == (4, 128) and np.all(batch["loss_weights"].sum(-1) > 0)
  last = list(make_pipeline(cfg, split="eval"))[-1]
  assert last["inputs"].shape == (4, 128)


def test_module_functions_walks_classes_and_blocks():
  source = b'''
def top(a, b=1):
  """Top doc."""
  def nested():
    pass
class K:
  def method(self, *args):
    """Method doc."""
  if True:
    def conditional(self):
      return 1
try:
  def in_try(): pass
except ImportError:
  def in_except(): pass
'''
  functions = stdlib_tasks.module_functions(source, "pkg.mod")
  assert [f.qualname for f in functions] == ["top", "K.method", "K.conditional", "in_try",
                                             "in_except"]
  top = functions[0]
  assert (top.signature, top.docstring, top.top_module, top.key) == (
      "a, b=1", "Top doc.", "pkg", "pkg.mod:top")
  assert functions[2].source == "def conditional(self):\n  return 1"
  assert stdlib_tasks.module_functions(b"def broken(:\n", "x") == []
