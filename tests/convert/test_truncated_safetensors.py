"""A truncated safetensors file names the file, the tensor and the byte counts (no torch needed)."""

import json
import os

import numpy as np
import pytest

from llm_jax.convert import common


def _folder(tmp_path):
  tensors = {"a.weight": np.ones((4, 8), np.float32), "z.weight": np.arange(1024, dtype=np.float32)}
  common.write_safetensors(str(tmp_path / "model.safetensors"), tensors)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  return tensors


def test_whole_file_reads_back(tmp_path):
  tensors = _folder(tmp_path)
  _, read = common.read_hf_folder(str(tmp_path))
  for name, value in tensors.items():
    np.testing.assert_array_equal(read[name], value)


def test_truncated_file_names_file_tensor_and_byte_counts(tmp_path):
  _folder(tmp_path)
  path = tmp_path / "model.safetensors"
  os.truncate(path, os.path.getsize(path) - 1000)
  with pytest.raises(common.ConversionError) as error:
    common.read_hf_folder(str(tmp_path))
  message = str(error.value)
  assert str(path) in message and "'z.weight'" in message
  assert "needs 4096 bytes" in message and "holds 3096" in message


def test_file_cut_inside_its_header(tmp_path):
  _folder(tmp_path)
  path = tmp_path / "model.safetensors"
  os.truncate(path, 20)
  with pytest.raises(common.ConversionError, match="truncated safetensors file"):
    common.read_safetensors(str(path))
