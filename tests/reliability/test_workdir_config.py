"""Which config changes a resume allows, and where a workdir can be."""

import os

import pytest

from llm_jax.training import workdir as workdir_lib


def _config():
  return {"model": {"d_model": 32, "peft": {"method": "none"}, "attention_impl": "auto"},
          "data": {"tokenizer": "byte", "data_dir": "/a"}, "objective": {"name": "clm"},
          "task": {"name": "pretrain"},
          "optimizer": {"name": "adamw", "learning_rate": 1e-3, "warmup_steps": 5},
          "train": {"steps": 60, "log_every": 1, "checkpoint_every": 20, "eval_every": 20,
                    "batch_size": 8, "overwrite": False},
          "mesh": {"data": -1}}


@pytest.mark.parametrize("field,value", [
    ("train.steps", 120), ("train.log_every", 5), ("train.checkpoint_every", 7),
    ("train.eval_every", 3), ("optimizer.learning_rate", 1e-4), ("optimizer.warmup_steps", 0),
    ("mesh.data", 2), ("data.data_dir", "/b"), ("model.attention_impl", "xla"),
    ("train.overwrite", True)])
def test_resume_may_change_cadence_schedule_mesh_and_paths(field, value):
  current = _config()
  section, key = field.split(".")
  current[section][key] = value
  assert workdir_lib.config_differences(_config(), current) == []


@pytest.mark.parametrize("field,value", [
    ("model.d_model", 64), ("model.peft.method", "lora"), ("data.tokenizer", "sentencepiece"),
    ("objective.name", "prefix_lm"), ("task.name", "sft"), ("optimizer.name", "sgd"),
    ("train.batch_size", 16)])
def test_resume_refuses_model_data_task_and_state_tree_changes(field, value):
  current = _config()
  *path, key = field.split(".")
  node = current
  for part in path:
    node = node[part]
  node[key] = value
  differences = workdir_lib.config_differences(_config(), current)
  assert len(differences) == 1 and differences[0].startswith(field + ":")


def test_a_workdir_that_is_a_file_or_unwritable_is_refused(tmp_path):
  afile = tmp_path / "file"
  afile.write_text("x")
  with pytest.raises(workdir_lib.ConfigError, match="not a directory"):
    workdir_lib.check_location(str(afile))
  with pytest.raises(workdir_lib.ConfigError, match="not a directory"):
    workdir_lib.check_location(str(afile / "run"))


def test_a_read_only_location_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # as on a read-only filesystem
  with pytest.raises(workdir_lib.ConfigError, match="not writable"):
    workdir_lib.check_location(str(tmp_path / "run"))
