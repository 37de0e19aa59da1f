"""Tasks from YAML (lm-evaluation-harness-like fields) or Python files.

YAML fields (paths relative to the file):

  task: my_task                      # required
  output_type: multiple_choice       # required: multiple_choice | generate_until | loglikelihood_rolling
  data_files: {test: test.jsonl, train: train.jsonl}   # or tfds_name (+ tfds_data_dir), or
                                     # lm-eval's dataset_path: json + dataset_kwargs: {data_files}
  format: auto                       # jsonl | csv | tsv | mmlu_csv | hellaswag_jsonl | gsm8k_jsonl
  eval_split: test                   # default test
  fewshot_split: train               # default train (k-shot examples); null: none
  doc_to_text: "{{question}}"        # required except for loglikelihood_rolling
  doc_to_choice: "{{choices}}"       # required for multiple_choice (or a list)
  doc_to_target: "{{answer}}"        # required
  target_delimiter: " "              # fewshot_delimiter: "\n\n"
  metric_list: [acc, acc_norm]       # default per output type
  generation_kwargs: {until: ["\n"], max_gen_toks: 32, do_sample: false, temperature: 1.0}
  answer_regex: "#### (\\-?[0-9.,]+)"

A Python task file defines TASK (a Task) or get_task() returning one.
"""

import functools
import importlib.util
import os

import yaml

from llm_jax.evaluation.harness import readers
from llm_jax.evaluation.harness.task import Task, TaskError

_REQUIRED = {"multiple_choice": ("doc_to_text", "doc_to_choice", "doc_to_target"),
             "generate_until": ("doc_to_text", "doc_to_target"),
             "loglikelihood_rolling": ("doc_to_target",)}
_KNOWN = {"task", "output_type", "data_files", "format", "tfds_name", "tfds_data_dir",
          "eval_split", "test_split", "fewshot_split", "doc_to_text", "doc_to_choice",
          "doc_to_target", "target_delimiter", "fewshot_delimiter", "metric_list", "metrics",
          "generation_kwargs", "answer_regex", "description",
          # lm-evaluation-harness' names for a local JSON / CSV dataset
          "dataset_path", "dataset_kwargs", "validation_split", "training_split"}


def _require(spec: dict, field: str, path: str):
  if field not in spec or spec[field] is None:
    raise TaskError(f"task file {path}: missing field {field!r}")
  return spec[field]


def _doc_source(spec: dict, path: str):
  """split -> documents, read on first use and kept."""
  fmt = spec.get("format", "auto")
  if spec.get("tfds_name"):
    data_dir = spec.get("tfds_data_dir")
    return functools.lru_cache(maxsize=None)(
        lambda split: readers.read_tfds(spec["tfds_name"], split, data_dir))
  files = spec.get("data_files")
  if files is None and spec.get("dataset_path") in ("json", "csv"):
    files = (spec.get("dataset_kwargs") or {}).get("data_files")
    fmt = "jsonl" if spec["dataset_path"] == "json" else "csv"
  if files is None:
    raise TaskError(f"task file {path}: missing field 'data_files' (or tfds_name, or lm-eval's "
                    "dataset_path: json with dataset_kwargs.data_files)")
  if not isinstance(files, dict) or not files:
    raise TaskError(f"task file {path}: data_files must map split names to files, got {files!r}")
  base = os.path.dirname(os.path.abspath(path))

  @functools.lru_cache(maxsize=None)
  def docs(split):
    if split not in files:
      raise TaskError(f"task file {path}: data_files has no split {split!r} (splits: "
                      f"{sorted(files)})")
    return readers.read_docs(os.path.join(base, os.path.expanduser(files[split])), fmt)

  return docs


def _metric(entry, path: str) -> str:
  if isinstance(entry, dict):  # lm-eval's metric_list entries: {metric: acc, ...}
    return _require(entry, "metric", path)
  return str(entry)


def task_from_yaml(path: str) -> Task:
  try:
    with open(path, encoding="utf-8") as f:
      spec = yaml.safe_load(f)
  except yaml.YAMLError as e:
    raise TaskError(f"task file {path} is not valid YAML: {e}") from e
  if not isinstance(spec, dict):
    raise TaskError(f"task file {path} must hold a mapping of fields, got {type(spec).__name__}")
  unknown = set(spec) - _KNOWN
  if unknown:
    raise TaskError(f"task file {path}: unknown field(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
  name = _require(spec, "task", path)
  output_type = _require(spec, "output_type", path)
  if output_type not in _REQUIRED:
    raise TaskError(f"task file {path}: output_type={output_type!r}, expected one of "
                    f"{sorted(_REQUIRED)}")
  for field in _REQUIRED[output_type]:
    _require(spec, field, path)
  generation = spec.get("generation_kwargs") or {}
  metrics = spec.get("metric_list", spec.get("metrics")) or ()
  kwargs = dict(
      name=str(name), output_type=output_type, docs=_doc_source(spec, path),
      doc_to_text=spec.get("doc_to_text", ""), doc_to_target=spec["doc_to_target"],
      doc_to_choice=spec.get("doc_to_choice"),
      eval_split=spec.get("eval_split", spec.get("test_split", "test")),
      fewshot_split=spec.get("fewshot_split", spec.get("training_split", "train")),
      metrics=tuple(_metric(m, path) for m in metrics), answer_regex=spec.get("answer_regex"),
      source=path)
  for field in ("target_delimiter", "fewshot_delimiter"):
    if field in spec:
      kwargs[field] = spec[field]
  if "until" in generation:
    until = generation["until"]
    kwargs["until"] = (until,) if isinstance(until, str) else tuple(until)
  for ours, theirs in (("max_new_tokens", "max_gen_toks"), ("do_sample", "do_sample"),
                       ("temperature", "temperature")):
    if theirs in generation:
      kwargs[ours] = generation[theirs]
  return Task(**kwargs)


def task_from_python(path: str) -> Task:
  module_spec = importlib.util.spec_from_file_location(
      f"llm_jax_task_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if hasattr(module, "get_task"):
    task = module.get_task()
  elif hasattr(module, "TASK"):
    task = module.TASK
  else:
    raise TaskError(f"task file {path}: defines neither TASK nor get_task()")
  if not isinstance(task, Task):
    raise TaskError(f"task file {path}: TASK / get_task() must be a Task, got "
                    f"{type(task).__name__}")
  return task


def load_task_file(path: str) -> Task:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"task file {path!r} does not exist")
  if path.endswith((".yaml", ".yml")):
    return task_from_yaml(path)
  if path.endswith(".py"):
    return task_from_python(path)
  raise TaskError(f"task file {path}: expected a .yaml, .yml or .py file")
