"""Checkpoints: flipped bytes, NaN values and a tree of another model are caught at restore;
a failed save (a full disk) removes its partial directory and says so in one line."""

import errno
import logging
import os

import jax
import numpy as np
import pytest

from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import integrity


class _Iterator:

  def __init__(self, position=0):
    self.position = position

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def _replicated():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _state(value, size=4096):
  return {"w": jax.device_put(np.full((size,), value, np.float32), _replicated()),
          "b": jax.device_put(np.arange(8.0, dtype=np.float32), _replicated())}


def _save_steps(workdir, values, async_save=False):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), save_every=1, keep=5,
                                             async_save=async_save)
  for step, value in enumerate(values, start=1):
    checkpointer.save(step, _state(value), _Iterator(step))
  checkpointer.close()


def _restore(workdir, state_like):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), save_every=1, keep=5)
  abstract = jax.eval_shape(lambda: state_like)
  shardings = jax.tree.map(lambda _: _replicated(), state_like)
  try:
    return checkpointer.restore_latest(abstract, shardings, _Iterator())
  finally:
    checkpointer.close()


def _step_dir(workdir, step):
  return workdir / checkpoint_lib.CHECKPOINT_DIR / str(step)


def test_every_save_writes_a_manifest_that_verifies(tmp_path):
  _save_steps(tmp_path, [1.0, 2.0], async_save=True)
  for step in (1, 2):
    assert integrity.has_manifest(str(_step_dir(tmp_path, step)))
    assert integrity.verify(str(_step_dir(tmp_path, step))) == []
  assert not [n for n in os.listdir(tmp_path / "checkpoints") if "tmp" in n]


def test_flipped_bytes_fall_back_to_the_previous_checkpoint(tmp_path, caplog):
  _save_steps(tmp_path, [1.0, 2.0])
  data_files = []
  for root, _, names in os.walk(_step_dir(tmp_path, 2) / "state"):
    data_files += [os.path.join(root, n) for n in names if os.sep + "d" + os.sep in root + os.sep]
  largest = max(data_files, key=os.path.getsize)
  with open(largest, "r+b") as f:  # the corruption: XOR bytes mid-file, size unchanged
    f.seek(os.path.getsize(largest) // 2 - 64)
    chunk = f.read(128)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))
  with caplog.at_level(logging.ERROR):
    step, state, data_iter = _restore(tmp_path, _state(0.0))
  assert step == 1 and data_iter.position == 1
  np.testing.assert_array_equal(np.asarray(state["w"]), 1.0)
  message = " ".join(r.getMessage() for r in caplog.records)
  assert "step 2" in message and os.path.basename(largest) in message and "checksum" in message
  assert os.path.isdir(tmp_path / checkpoint_lib.CORRUPT_DIR / "2")


def test_nan_values_fall_back_and_missing_manifest_restores_with_a_warning(tmp_path, caplog):
  _save_steps(tmp_path, [1.0, np.nan])
  os.remove(_step_dir(tmp_path, 1) / integrity.MANIFEST)  # as written by an older version
  with caplog.at_level(logging.WARNING):
    step, state, _ = _restore(tmp_path, _state(0.0))
  assert step == 1 and np.all(np.asarray(state["w"]) == 1.0)
  messages = [r.getMessage() for r in caplog.records]
  assert any("step 2" in m and "NaN" in m and "w" in m for m in messages)
  assert any("step 1" in m and integrity.MANIFEST in m for m in messages)


def test_a_tree_of_another_model_is_a_mismatch_not_corruption(tmp_path):
  _save_steps(tmp_path, [1.0])
  with pytest.raises(checkpoint_lib.CheckpointMismatchError, match=r"w: saved \(4096,\)"):
    _restore(tmp_path, _state(0.0, size=64))
  with pytest.raises(checkpoint_lib.CheckpointMismatchError):
    checkpoint_lib.check_latest_matches(str(tmp_path), jax.eval_shape(lambda: _state(0.0, 64)))
  assert os.path.isdir(_step_dir(tmp_path, 1))  # left where it was
  assert not os.path.exists(tmp_path / checkpoint_lib.CORRUPT_DIR)


def test_full_disk_removes_the_partial_directory_and_says_so(tmp_path, monkeypatch):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), save_every=1, keep=2, async_save=False)
  partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234"

  def full_disk(step, args, force):
    del step, args, force
    os.makedirs(partial / "state")
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpointer._manager, "save", full_disk)  # pylint: disable=protected-access
  with pytest.raises(checkpoint_lib.CheckpointWriteError) as error:
    checkpointer.save(3, _state(1.0), _Iterator())
  monkeypatch.undo()
  checkpointer.close()
  message = str(error.value)
  assert "No space left on device" in message and partial.name in message
  assert len(message.splitlines()) == 1
  assert not partial.exists()
