"""Checkpoints: the data iterator travels with the state, unreadable ones fall back, any mesh."""

import logging
import os
import shutil

import jax
import numpy as np

from llm_jax import config as config_lib
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import integrity
from llm_jax.training import loop
from llm_jax.training import metrics as metrics_lib
from llm_jax.training import train_step as train_step_lib


def _restore(cfg, workdir):
  cfg = config_lib.finalize(cfg)
  mesh = sharding.make_mesh(cfg.mesh)
  model = models.build_model(cfg.model)
  abstract_state, shardings = train_step_lib.abstract_train_state(cfg, model, mesh)

  class Iterator:
    state = None

    def get_state(self):
      return self.state

    def set_state(self, state):
      self.state = state

  checkpointer = checkpoint_lib.Checkpointer(workdir, save_every=1, keep=3)
  step, state, data_iter = checkpointer.restore_latest(abstract_state, shardings, Iterator())
  checkpointer.close()
  return step, state, data_iter, shardings


def test_restore_onto_another_mesh(tmp_path, tiny_config):
  loop.train(tiny_config("gpt_tiny", steps=3, mesh__data=8), str(tmp_path))
  _, saved, _, _ = _restore(tiny_config("gpt_tiny", mesh__data=8), str(tmp_path))
  cfg = tiny_config("gpt_tiny", mesh__data=1, mesh__fsdp=4, mesh__tensor=2)
  step, state, data_iter, shardings = _restore(cfg, str(tmp_path))
  assert step == 3
  assert data_iter.state is not None
  for a, b, s in zip(jax.tree.leaves(saved), jax.tree.leaves(state), jax.tree.leaves(shardings)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert b.sharding.is_equivalent_to(s, b.ndim)
  assert any("tensor" in str(s.spec) for s in jax.tree.leaves(shardings))
  # Training continues on the new mesh.
  result = loop.train(tiny_config("gpt_tiny", steps=5, mesh__data=1, mesh__fsdp=4,
                                  mesh__tensor=2), str(tmp_path))
  assert result["step"] == 5 and np.isfinite(result["loss"])


def test_unreadable_latest_checkpoint_falls_back_by_name(tmp_path, tiny_config, caplog):
  loop.train(tiny_config("gpt_tiny", steps=6, train__checkpoint_every=3), str(tmp_path))
  latest = tmp_path / "checkpoints" / "6"
  shutil.rmtree(latest / "state" / "d")
  with caplog.at_level(logging.ERROR):
    result = loop.train(tiny_config("gpt_tiny", steps=8, train__checkpoint_every=3),
                        str(tmp_path))
  assert any("step 6" in r.getMessage() and str(latest) in r.getMessage() for r in caplog.records)
  assert result["step"] == 8
  steps = [row["step"] for row in metrics_lib.read_rows(tmp_path) if "loss" in row]
  assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # rows after step 3 were rewritten by the rerun
  assert os.path.isdir(tmp_path / checkpoint_lib.CORRUPT_DIR / "6")


class _CountingIterator:

  def __init__(self, position=0):
    self.position = position

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def test_iterator_state_saved_for_another_process_count_starts_over(tmp_path, caplog):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {"w": jax.device_put(np.arange(4.0), replicated)}
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), save_every=1, keep=2)
  checkpointer.save(1, state, _CountingIterator(5))
  checkpointer.close()
  step_dir = tmp_path / checkpoint_lib.CHECKPOINT_DIR / "1" / "data_iter"
  os.rename(step_dir / checkpoint_lib.DataIteratorHandler.filename(),
            step_dir / "process_0-of-2.json")
  integrity.write_manifest(str(step_dir.parent))  # as a 2-process save would have written it
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), save_every=1, keep=2)
  with caplog.at_level(logging.WARNING):
    step, restored, data_iter = checkpointer.restore_latest(
        jax.eval_shape(lambda: state), {"w": replicated}, _CountingIterator(0))
  checkpointer.close()
  assert step == 1 and data_iter.position == 0
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4.0))
  assert any("starts over" in r.getMessage() for r in caplog.records)
