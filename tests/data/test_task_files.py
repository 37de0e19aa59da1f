"""Task rows from JSONL / CSV / TSV globs and TFDS, with provenance and clear errors."""

import gzip
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from llm_jax.config import base_config
from llm_jax.data import make_pipeline, read_task_rows, task_files
from llm_jax.data.task_files import PROVENANCE


def _config(tmp_path, train="", eval_files=""):
  cfg = base_config()
  cfg.task.name = "classification"
  cfg.task.labels = ("neg", "pos")
  cfg.data.train_files, cfg.data.eval_files = train, eval_files
  cfg.data.sequence_length = 16
  cfg.train.batch_size = 2
  return cfg


def test_jsonl_rows_name_file_and_line(tmp_path):
  path = tmp_path / "a.jsonl"
  path.write_text('{"text": "one", "label": "neg"}\n\n{"text": "two", "label": "pos"}\n')
  rows = task_files.read_file_rows(str(path))
  assert [r["text"] for r in rows] == ["one", "two"]
  assert [r[PROVENANCE] for r in rows] == [f"{path}:1", f"{path}:3"]  # Blank lines still count.


def test_csv_and_tsv_rows(tmp_path):
  (tmp_path / "a.csv").write_text('text,label\n"multi\nline",neg\nplain,pos\n')
  (tmp_path / "b.tsv").write_text("text\tlabel\nx y\tpos\n")
  rows = task_files.read_files(str(tmp_path / "*.?sv"))
  assert [(r["text"], r["label"]) for r in rows] == [("multi\nline", "neg"), ("plain", "pos"),
                                                     ("x y", "pos")]
  # A record starts on its line; a quoted newline moves the next record down.
  assert [r[PROVENANCE].rsplit(":", 1)[1] for r in rows] == ["2", "4", "2"]


def test_gzipped_jsonl_and_explicit_format(tmp_path):
  with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
    f.write('{"text": "zipped"}\n')
  (tmp_path / "b.txt").write_text('{"text": "plain"}\n')
  assert task_files.read_file_rows(str(tmp_path / "a.jsonl.gz"))[0]["text"] == "zipped"
  with pytest.raises(ValueError, match=r"b\.txt.*extension '\.txt'.*data\.format"):
    task_files.read_file_rows(str(tmp_path / "b.txt"))
  assert task_files.read_file_rows(str(tmp_path / "b.txt"), "jsonl")[0]["text"] == "plain"
  with pytest.raises(ValueError, match="data.format must be one of"):
    task_files.read_file_rows(str(tmp_path / "b.txt"), "parquet")


def test_malformed_json_names_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "ok"}\n{"text": oops}\n')
  with pytest.raises(ValueError, match=rf"{path}:2: malformed JSON"):
    task_files.read_file_rows(str(path))
  path.write_text('{"text": "ok"}\n["a list"]\n')
  with pytest.raises(ValueError, match=rf"{path}:2: a JSONL row must be a JSON object"):
    task_files.read_file_rows(str(path))


def test_csv_with_a_short_record(tmp_path):
  path = tmp_path / "a.csv"
  path.write_text("text,label\nfine,neg\nshort\n")
  with pytest.raises(ValueError, match=rf"{path}:3: 1 fields, but the header"):
    task_files.read_file_rows(str(path))


def test_glob_matching_nothing_names_glob_and_field(tmp_path):
  cfg = _config(tmp_path, train=str(tmp_path / "nothing*.jsonl"))
  with pytest.raises(ValueError, match=r"data\.train_files='.*nothing\*\.jsonl' matches no files"):
    read_task_rows(cfg, "train")
  with pytest.raises(ValueError, match=r"data\.eval_files is empty"):
    read_task_rows(cfg, "eval")
  with pytest.raises(ValueError, match="split must be"):
    read_task_rows(cfg, "test")


def test_comma_separated_globs_and_split_names(tmp_path):
  for name in ("a", "b"):
    (tmp_path / f"{name}.jsonl").write_text(json.dumps({"text": name, "label": "neg"}) + "\n")
  cfg = _config(tmp_path, train=f"{tmp_path}/a.jsonl,{tmp_path}/b.jsonl", eval_files=f"{tmp_path}/b*")
  assert [r["text"] for r in read_task_rows(cfg, "train")] == ["a", "b"]
  assert [r["text"] for r in read_task_rows(cfg, "validation")] == ["b"]


def test_missing_field_names_file_line_and_field(tmp_path):
  path = tmp_path / "a.jsonl"
  path.write_text('{"text": "ok", "label": "neg"}\n{"txt": "typo", "label": "pos"}\n')
  row = task_files.read_file_rows(str(path))[1]
  with pytest.raises(KeyError, match=rf"{path}:2: no field 'text' \(task.text_field\); the row has "
                     r"\['label', 'txt'\]"):
    task_files.require_field(row, "text", "task.text_field")
  with pytest.raises(KeyError, match=rf"{path}:2: no field 'text'"):  # The pipeline checks up front.
    make_pipeline(_config(tmp_path, train=str(path)))


class LlmJaxTaskRowsTest(tfds.core.GeneratorBasedBuilder):
  """A tiny TFDS dataset with a text, an integer class label and a float."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"]),
        "score": tfds.features.Scalar(dtype=np.float32)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 6), "validation": self._generate_examples(6, 9)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {"text": f"review {i}", "label": i % 2, "score": i / 2}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  LlmJaxTaskRowsTest(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


def _tfds_config(tmp_path, tfds_dir):
  cfg = _config(tmp_path)
  cfg.data.source, cfg.data.tfds_name, cfg.data.tfds_data_dir = "tfds", "llm_jax_task_rows_test", tfds_dir
  return cfg


def test_tfds_rows(tmp_path, tfds_dir):
  cfg = _tfds_config(tmp_path, tfds_dir)
  rows = read_task_rows(cfg, "train")
  assert len(rows) == 6 and len(read_task_rows(cfg, "eval")) == 3
  assert sorted(r["text"] for r in rows) == [f"review {i}" for i in range(6)]
  row = rows[0]
  assert isinstance(row["text"], str) and isinstance(row["label"], int)
  assert row["score"] == int(row["text"].split()[1]) / 2
  assert row[PROVENANCE] == "tfds:llm_jax_task_rows_test/1.0.0/train[0]"


def test_tfds_rows_through_the_pipeline(tmp_path, tfds_dir):
  cfg = _tfds_config(tmp_path, tfds_dir)
  cfg.task.labels = ()  # ClassLabel features are integer ids.
  cfg.model.num_labels = 2
  batches = list(make_pipeline(cfg, split="eval"))
  assert len(batches) == 2 and batches[-1]["loss_weights"].tolist() == [1.0, 0.0]
  cfg.task.name, cfg.task.label_field = "regression", "score"
  batch = next(make_pipeline(cfg))
  assert batch["targets"].dtype == np.float32 and set(batch["targets"] * 2) <= set(range(6))


def test_tfds_errors(tmp_path, tfds_dir):
  cfg = _tfds_config(tmp_path, tfds_dir)
  cfg.data.eval_split = "test"
  with pytest.raises(ValueError, match=r"Split 'test' not in dataset"):
    read_task_rows(cfg, "eval")
  cfg.data.tfds_name = "no_such_dataset_xyz"
  with pytest.raises(ValueError, match="no_such_dataset_xyz"):
    read_task_rows(cfg, "train")
  cfg.data.tfds_name, cfg.task.text_field = "llm_jax_task_rows_test", "body"
  with pytest.raises(KeyError, match=r"tfds:llm_jax_task_rows_test/1\.0\.0/train\[\d\]: no field 'body'"):
    next(make_pipeline(cfg))
