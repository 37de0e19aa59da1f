"""A config of another model in an existing workdir stops before touching it; overwrite starts over."""

import hashlib
import json
import os

import pytest

from llm_jax.training import loop
from llm_jax.training import metrics as metrics_lib
from llm_jax.training import workdir as workdir_lib


def _snapshot(root):
  """{relative path: sha256 or 'dir'} of everything under root, with modification times."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames:
      out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (hashlib.sha256(f.read()).hexdigest(),
                                            os.stat(path).st_mtime_ns)
  return out


def test_mismatch_leaves_the_workdir_identical_and_the_original_command_resumes(tmp_path,
                                                                                 tiny_config):
  workdir = tmp_path / "run"
  loop.train(tiny_config("gpt_tiny", steps=2, train__checkpoint_every=1), str(workdir))
  before = _snapshot(workdir)

  with pytest.raises(workdir_lib.WorkdirMismatchError, match=r"model\.d_model: 32 .* 64") as error:
    loop.train(tiny_config("gpt_tiny", steps=2, model__d_model=64), str(workdir))
  assert "train.overwrite=True" in str(error.value)
  assert len(str(error.value).splitlines()) <= 4
  assert _snapshot(workdir) == before

  # The original run extended (train.steps may change) resumes from its checkpoint.
  result = loop.train(tiny_config("gpt_tiny", steps=3), str(workdir))
  assert result["step"] == 3
  assert [r["step"] for r in metrics_lib.read_rows(workdir) if "loss" in r] == [1, 2, 3]

  # Without config.json the checkpoint's tree still tells the model apart (no "unreadable").
  os.remove(workdir / "config.json")
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="does not match"):
    loop.train(tiny_config("gpt_tiny", steps=2, model__d_model=64), str(workdir))
  assert _snapshot(workdir) == before

  # Starting over is explicit: the old run is renamed aside, nothing is deleted.
  result = loop.train(tiny_config("gpt_tiny", steps=1, train__overwrite=True), str(workdir))
  assert result["step"] == 1
  aside = [name for name in os.listdir(tmp_path) if name.startswith("run.overwritten-")]
  assert len(aside) == 1
  assert sorted(os.listdir(tmp_path / aside[0] / "checkpoints"))[-1] == "3"
  assert [r["step"] for r in metrics_lib.read_rows(workdir) if "loss" in r] == [1]
  with open(workdir / "config.json") as f:
    assert json.load(f)["train"]["overwrite"] is True
