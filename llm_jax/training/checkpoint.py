"""Orbax checkpoints of the TrainState and the data iterator in workdir/checkpoints.

Arrays are restored with the shardings of the *current* mesh (from `abstract_train_state`), so a
checkpoint written under one mesh shape restores under any other. Each save carries a checksum
manifest. At restore a checkpoint whose tree does not match the model is a config mismatch
(an error; the checkpoint stays); an unreadable, checksum-failing or NaN-holding one is
reported by step and path, moved aside, and the previous one is used.
"""

import contextlib
import dataclasses
import errno
import json
import logging as std_logging
import os
import shutil
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from llm_jax.training import integrity

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_unreadable"


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves `iterator.get_state()` (a JSON-able dict or bytes) as one JSON file per process.

  Like grain's own handler, but for any iterator with get_state/set_state (grain
  DatasetIterator, DataLoaderIterator, or a wrapper around them).
  """

  @staticmethod
  def filename():
    return f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def _path(self, directory):
    return epath.Path(directory) / self.filename()

  def save(self, directory, args):
    state = args.item.get_state()
    if isinstance(state, bytes):
      payload = {"bytes": state.decode()}
    else:
      payload = {"state": state}
    self._path(directory).write_text(json.dumps(payload))

  def restore(self, directory, args):
    path = self._path(directory)
    if not path.exists():
      raise FileNotFoundError(f"data iterator state {path} does not exist")
    payload = json.loads(path.read_text())
    state = payload["bytes"].encode() if "bytes" in payload else payload["state"]
    args.item.set_state(state)
    return args.item

  def metadata(self, directory):
    del directory
    return None

  def structure(self, directory):
    del directory
    return None

  def finalize(self, directory):
    del directory

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  item: Any


def with_shardings(abstract_state, shardings):
  """ShapeDtypeStructs that carry the target shardings, for restoring onto the current mesh."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)


class CheckpointMismatchError(ValueError):
  """A checkpoint's tree does not match the model: the config changed, the files are fine."""


class NoUsableCheckpointError(RuntimeError):
  """Every checkpoint of the workdir was corrupt; they were moved aside."""


class CheckpointWriteError(OSError):
  """A save failed (a full disk, say); its partial directory was removed."""


def _key_name(key):
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _leaf_shapes(tree):
  """{'params.decoder.kernel': shape} for every array leaf (Orbax's names for its metadata)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {".".join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in leaves if hasattr(leaf, "shape")}


def tree_mismatches(step_dir, abstract_state):
  """How the saved state tree of `step_dir` differs from `abstract_state` ([] if it matches).

  Reads only Orbax's metadata; raises (any exception) when that is unreadable.
  """
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state")
  saved, wanted = _leaf_shapes(metadata), _leaf_shapes(abstract_state)
  problems = [f"{name}: saved {saved[name]}, the model has {wanted[name]}"
              for name in sorted(saved.keys() & wanted.keys()) if saved[name] != wanted[name]]
  problems += [f"{name}: in the model, not in the checkpoint" for name in sorted(wanted.keys() - saved.keys())]
  problems += [f"{name}: in the checkpoint, not in the model" for name in sorted(saved.keys() - wanted.keys())]
  return problems


def _mismatch_error(step, step_dir, problems):
  shown = "\n  ".join(problems[:8]) + (f"\n  ... {len(problems) - 8} more" if len(problems) > 8 else "")
  return CheckpointMismatchError(
      f"checkpoint at step {step} ({step_dir}) does not match this config's model (the config "
      f"changed; the checkpoint is intact and was left as it is):\n  {shown}")


def finalized_steps(directory):
  """Steps of the finalized checkpoints in `directory` (not Orbax's *.orbax-checkpoint-tmp*)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check_latest_matches(workdir, abstract_state):
  """Raises CheckpointMismatchError if the newest checkpoint with readable metadata in
  `workdir` does not match `abstract_state`. Reads only; creates nothing."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  for step in reversed(finalized_steps(directory)):
    step_dir = os.path.join(directory, str(step))
    try:
      problems = tree_mismatches(step_dir, abstract_state)
    except Exception:  # pylint: disable=broad-except
      continue  # Unreadable: restore_latest reports it and falls back.
    if problems:
      raise _mismatch_error(step, step_dir, problems)
    return


@jax.jit
def _finite_leaves(tree):
  return jax.tree.map(
      lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else True, tree)


def non_finite_leaves(tree):
  """Names of the float leaves of `tree` holding a NaN or Inf (one device round trip)."""
  flags = jax.device_get(_finite_leaves(tree))
  return [".".join(_key_name(k) for k in path)
          for path, ok in jax.tree_util.tree_flatten_with_path(flags)[0] if not bool(ok)]


class _DropEventLoopNoise(std_logging.Filter):
  """Orbax logs an 'Event loop is closed' traceback per pending read when a restore fails."""

  def filter(self, record):
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
    return "Event loop is closed" not in text


@contextlib.contextmanager
def _quiet_orbax_errors():
  noise = _DropEventLoopNoise()
  targets = [std_logging.getLogger(), std_logging.getLogger("asyncio"), *std_logging.getLogger().handlers]
  for target in targets:
    target.addFilter(noise)
  try:
    yield
  finally:
    for target in targets:
      target.removeFilter(noise)


def _no_space(error):
  while error is not None:
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


class Checkpointer:
  """Saves every `save_every` steps (async if asked), keeps the last `keep`.

  Every save writes a checksum manifest (integrity.py) before Orbax finalizes the directory;
  a restore verifies it, checks the tree against the model and the values for NaN/Inf.
  """

  def __init__(self, workdir, *, save_every, keep, async_save=True):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self._workdir = os.path.abspath(workdir)
    self.save_every = save_every
    self._async = async_save
    self._saving_step = None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        # Always Orbax's async path: its post-finalization hook writes the manifest inside the
        # temporary directory; a synchronous save waits for it right away.
        enable_async_checkpointing=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest),
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data_iter"))

  def all_steps(self):
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self):
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_path(self, step):
    return os.path.join(self.directory, str(step))

  def should_save(self, step):
    return self.save_every > 0 and step % self.save_every == 0

  def _temporary_dirs(self, step=None):
    prefix = f"{step}.orbax-checkpoint-tmp" if step is not None else ""
    return sorted(os.path.join(self.directory, name) for name in os.listdir(self.directory)
                  if ".orbax-checkpoint-tmp" in name and name.startswith(prefix))

  def _write_manifest(self):
    """Runs on the primary process after every process wrote its files, before the rename."""
    step = self._saving_step
    candidates = self._temporary_dirs(step) or [self.step_path(step)]
    integrity.write_manifest(candidates[-1])

  def save(self, step, state, data_iter, *, force=False):
    """Starts saving (returns before the write ends when async). Returns whether it saved.

    A failed save (e.g. a full disk) raises CheckpointWriteError after removing its partial
    directory.
    """
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      return False
    try:
      self._manager.wait_until_finished()  # the previous save's errors surface here
      self._saving_step = step
      saved = self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data_iter=DataIteratorSave(data_iter)),
          force=True,
      )
      if not self._async:
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_failed(e) from e
    return saved

  def _write_failed(self, error):
    """Removes partial step directories; the error to raise (short for a full disk)."""
    removed = []
    if jax.process_index() == 0 and os.path.isdir(self.directory):
      for path in self._temporary_dirs():
        shutil.rmtree(path, ignore_errors=True)
        removed.append(os.path.basename(path))
    what = f"; removed the partial {', '.join(removed)}" if removed else ""
    if _no_space(error):
      return CheckpointWriteError(
          errno.ENOSPC, f"saving checkpoint {self._saving_step} in {self.directory} failed: No "
          f"space left on device{what}. Free space (or lower train.keep_checkpoints) and rerun "
          "to resume from the last complete checkpoint")
    if isinstance(error, CheckpointWriteError):
      return error
    return CheckpointWriteError(
        f"saving checkpoint {self._saving_step} in {self.directory} failed{what}: "
        f"{type(error).__name__}: {str(error)[:300]}")

  def _try_restore(self, step, target, data_iter):
    """(state, data_iter, None) or (None, None, why the checkpoint is unusable)."""
    step_dir = self.step_path(step)
    try:
      problems = tree_mismatches(step_dir, target)
    except Exception as e:  # pylint: disable=broad-except
      return None, None, f"its metadata is unreadable: {type(e).__name__}: {str(e)[:200]}"
    if problems:
      raise _mismatch_error(step, step_dir, problems)
    if integrity.has_manifest(step_dir):
      bad = integrity.verify(step_dir, (jax.process_index(), jax.process_count()))
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        bad_anywhere = int(np.sum(multihost_utils.process_allgather(np.int32(len(bad)))))
      else:
        bad_anywhere = len(bad)
      if bad_anywhere:
        return None, None, ("its files differ from the checksums written at save time: "
                            + "; ".join(bad[:3]) if bad else "another process found bad files")
    else:
      logging.warning("checkpoint at step %d (%s) has no %s (saved by an older version): restoring "
                      "it without checksum verification", step, step_dir, integrity.MANIFEST)
    iterator_file = os.path.join(step_dir, "data_iter", DataIteratorHandler.filename())
    items = {"state": ocp.args.StandardRestore(target)}
    if os.path.exists(iterator_file):
      items["data_iter"] = DataIteratorRestore(data_iter)
    else:
      logging.warning("checkpoint at step %d has no %s (saved with another process count?): "
                      "the data iterator starts over", step, iterator_file)
    try:
      with _quiet_orbax_errors():
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      return None, None, f"{type(e).__name__}: {str(e)[:300]}"
    non_finite = non_finite_leaves(restored["state"])
    if non_finite:
      return None, None, (f"{len(non_finite)} arrays hold NaN or Inf (e.g. "
                          f"{', '.join(non_finite[:3])})")
    return restored["state"], restored["data_iter"] if "data_iter" in items else data_iter, None

  def restore_latest(self, abstract_state, shardings, data_iter):
    """Returns (step, state, data_iter) from the newest usable checkpoint, or None if none.

    A checkpoint whose tree does not match the model raises CheckpointMismatchError and is left
    in place. Corrupt ones (unreadable, checksum mismatch, NaN/Inf values) are reported by step
    and path and moved to workdir/checkpoints_unreadable; the previous one is tried next.
    """
    target = with_shardings(abstract_state, shardings)
    steps = self.all_steps()
    for step in reversed(steps):
      state, restored_iter, why = self._try_restore(step, target, data_iter)
      if why is None:
        logging.info("restored checkpoint at step %d from %s", step, self.step_path(step))
        return step, state, restored_iter
      logging.error("checkpoint at step %d (%s) is unusable, moved to %s; using the previous "
                    "one: %s", step, self.step_path(step), CORRUPT_DIR, why)
      self._move_aside(step)
    if steps:
      raise NoUsableCheckpointError(f"no usable checkpoint in {self.directory} (tried steps {steps}); "
                         f"they were moved to {os.path.join(self._workdir, CORRUPT_DIR)}")
    return None

  def _move_aside(self, step):
    if jax.process_index() == 0:
      destination = os.path.join(self._workdir, CORRUPT_DIR, str(step))
      if os.path.exists(destination):
        shutil.rmtree(destination)
      os.makedirs(os.path.dirname(destination), exist_ok=True)
      shutil.move(self.step_path(step), destination)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"llm_jax_move_aside_{step}")
    self._manager.reload()

  def wait(self):
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_failed(e) from e

  def close(self):
    try:
      self.wait()
    finally:
      self._manager.close()
