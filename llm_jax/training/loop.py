"""The training loop: `train(cfg, workdir)`.

Rerunning with the same workdir resumes from the latest checkpoint and continues exactly: the
per-step rng is folded from the step number and the data iterator state is checkpointed.
"""

import dataclasses
import os
from typing import Any

from absl import logging
import jax
import numpy as np

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import models
from llm_jax import sharding
from llm_jax.data import preference_data
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import init_from as init_from_lib
from llm_jax.training import metrics as metrics_lib
from llm_jax.training import partition
from llm_jax.training import preemption
from llm_jax.training import prefetch
from llm_jax.training import reference_pass
from llm_jax.training import task_evaluation
from llm_jax.training import train_step as train_step_lib
from llm_jax.training import workdir as workdir_lib


class NonFiniteLossError(RuntimeError):
  """The loss, the gradient norm or the update norm became NaN or Inf; that state was not saved."""


ConfigError = workdir_lib.ConfigError


class _ProcessRows:
  """Reads the GLOBAL batch in every process and keeps this process's rows of it."""

  def __init__(self, iterator, process_index, process_count):
    self._iterator = iterator
    self._index, self._count = process_index, process_count

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._iterator)
    rows = len(next(iter(batch.values()))) // self._count
    return {k: v[self._index * rows:(self._index + 1) * rows] for k, v in batch.items()}

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)


def make_process_pipeline(cfg, split):
  """This process's share of each batch, as cfg.train.data_per_process says.

  'shard': each process reads its own shard of the documents (scales to many hosts).
  'slice': each process builds the global batch and keeps its rows, so the batches (and the
  losses) do not depend on the process count; every process pays for the whole input pipeline.
  """
  index, count = jax.process_index(), jax.process_count()
  if cfg.train.data_per_process == "shard":
    return data.make_pipeline(cfg, split=split, process_index=index, process_count=count)
  if cfg.train.data_per_process == "slice":
    return _ProcessRows(data.make_pipeline(cfg, split=split), index, count)
  raise ValueError(f"config.train.data_per_process={cfg.train.data_per_process!r}: expected "
                   "'shard' or 'slice'")


def _write_config(cfg, workdir):
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  with open(path + ".partial", "w") as f:
    f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  os.replace(path + ".partial", path)


def _tokens_per_step(global_batch):
  """Encoder (or decoder-only) plus decoder tokens in one global batch."""
  tokens = global_batch["inputs"].size
  if "decoder_inputs" in global_batch:
    tokens += global_batch["decoder_inputs"].size
  return tokens


def _all_processes_done(done):
  if jax.process_count() == 1:
    return done
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.array(done))))


def evaluate(cfg, eval_step, state, mesh, rules):
  """Sums of loss, weight and correct over up to cfg.train.eval_batches validation batches,
  and the per-example predictions, targets and weights the task reports (classification).

  A process whose share of the validation data ends first feeds zero-weight batches until
  every process is done, so that all of them run the same number of eval steps.
  """
  eval_iter = make_process_pipeline(cfg, "validation")
  totals = np.zeros(3, np.float64)
  examples = {}
  last = None
  for _ in range(cfg.train.eval_batches):
    local_batch = next(eval_iter, None)
    if _all_processes_done(local_batch is None):
      break
    if local_batch is None:
      local_batch = {**last, "loss_weights": np.zeros_like(last["loss_weights"])}
    last = local_batch
    sums = jax.device_get(eval_step(state.params, sharding.make_global_batch(local_batch, mesh, rules),
                                    state.frozen))
    totals += np.array([float(sums["loss_sum"]), float(sums["weight_sum"]),
                        float(sums["correct_sum"])])
    for key in ("predictions", "targets", "weights"):
      if key in sums:
        examples.setdefault(key, []).append(np.asarray(sums[key]))
  return totals, {k: np.concatenate(v) for k, v in examples.items()}


# Step metrics that must stay finite: a step where one is not produced a state never saved.
FINITE_METRICS = ("loss", "grad_norm", "update_norm")


def _first_non_finite(history):
  """(step, metric name, value, metrics) of the first non-finite FINITE_METRICS value, or None.

  history: [(step, host metrics)], fetched at a log/eval/save boundary (no extra sync).
  """
  for step, m in history:
    for name in FINITE_METRICS:
      if name in m and not np.isfinite(m[name]):
        return step, name, float(m[name]), m
  return None


def _non_finite_error(step, name, value, last_saved):
  kept = (f"the last good checkpoint (step {last_saved}) is kept" if last_saved is not None
          else "no checkpoint was saved")
  return NonFiniteLossError(
      f"{name} is {value} at step {step}; stopping without saving that state: {kept}. Lower the "
      "learning rate or check the data, then rerun to resume.")


@dataclasses.dataclass
class _Prepared:
  """What the preflight built; nothing of it has touched the workdir."""
  cfg: Any
  mesh: Any
  rules: Any
  model: Any
  tokenizer: Any
  layout: Any
  train_iter: Any


def _preflight(cfg, workdir):
  """Everything that can fail on the user's input, checked before the workdir is created or
  changed. Raises ConfigError (WorkdirMismatchError for another run's workdir)."""
  try:
    cfg = config_lib.finalize(cfg)
    workdir_lib.check_location(workdir)
    mesh = sharding.make_mesh(cfg.mesh)
    rules = sharding.rules_from_config(cfg)
    model = models.build_model(cfg.model)
    tokenizer = data.make_tokenizer(cfg.data)
    layout = train_step_lib.state_layout(cfg, model, mesh)
    train_step_lib.step_options(cfg, model, mesh)
    cfg = reference_pass.resolve(cfg, workdir)
    workdir_lib.check_resumable(cfg, workdir)
    if not cfg.train.overwrite:
      checkpoint_lib.check_latest_matches(workdir, layout.abstract_state)
    train_iter = None
    if not (preference_data.uses_precomputed_reference(cfg)
            and not os.path.exists(cfg.task.reference_logps_file)):
      train_iter = make_process_pipeline(cfg, "train")  # Finds missing or empty data now.
  except workdir_lib.ConfigError:
    raise
  except checkpoint_lib.CheckpointMismatchError as e:
    raise workdir_lib.WorkdirMismatchError(f"{e}\n{workdir_lib.OVERWRITE_HINT}") from e
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    raise workdir_lib.ConfigError(str(e)) from e
  return _Prepared(cfg, mesh, rules, model, tokenizer, layout, train_iter)


def _stopped_before_start(workdir, where):
  steps = checkpoint_lib.finalized_steps(os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR))
  step = steps[-1] if steps else 0
  logging.warning("SIGTERM received %s: stopping with nothing new to save (latest checkpoint: %s)",
                  where, f"step {step}" if steps else "none")
  return {"step": step, "preempted": True, "started": False}


def train(cfg, workdir, stop_at_step=None):
  """Trains cfg.train.steps steps in `workdir` (resuming if it holds a checkpoint).

  `stop_at_step` ends this call early, with a checkpoint, as a preemption there would; the
  schedule still spans cfg.train.steps. Returns the last train and eval metrics as one dict.
  Errors in the user's input raise ConfigError before anything is written.
  """
  with preemption.watching():
    prepared = _preflight(cfg, workdir)
    if preemption.requested():
      return _stopped_before_start(workdir, "before the run started")
    return _train(prepared, workdir, stop_at_step)


def _train(prepared, workdir, stop_at_step):
  cfg, mesh, rules, model = prepared.cfg, prepared.mesh, prepared.rules, prepared.model
  tokenizer, layout = prepared.tokenizer, prepared.layout
  is_primary = jax.process_index() == 0
  if cfg.train.overwrite and is_primary:
    workdir_lib.start_over(workdir)
  if cfg.train.overwrite and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("llm_jax_start_over")
  os.makedirs(workdir, exist_ok=True)
  if is_primary:
    _write_config(cfg, workdir)

  checkpointer = checkpoint_lib.Checkpointer(
      workdir, save_every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints,
      async_save=cfg.train.async_checkpointing)
  cfg = reference_pass.prepare(cfg, workdir, model, mesh, layout)
  train_iter = prepared.train_iter or make_process_pipeline(cfg, "train")
  abstract_state, shardings = layout.abstract_state, layout.shardings
  try:
    restored = checkpointer.restore_latest(abstract_state, shardings, train_iter)
  except checkpoint_lib.CheckpointMismatchError as e:
    checkpointer.close()
    raise workdir_lib.WorkdirMismatchError(f"{e}\n{workdir_lib.OVERWRITE_HINT}") from e
  if restored is None:
    initial = None
    if cfg.train.init_from:
      initial = init_from_lib.initial_params(cfg, models.abstract_params(model, cfg.model))
    state, shardings = train_step_lib.create_train_state(
        cfg, model, mesh, jax.random.key(cfg.train.seed), initial_params=initial, layout=layout)
    start_step = 0
  else:
    start_step, state, train_iter = restored
    logging.info("resuming from step %d", start_step)
  if is_primary:
    metrics_lib.drop_rows_after(workdir, start_step)
  trainable = partition.count(state.params)
  total = partition.count(models.abstract_params(model, cfg.model))
  logging.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}",
               100.0 * trainable / max(total, 1))

  train_step = train_step_lib.make_train_step(cfg, model, mesh, shardings, layout=layout)
  eval_step = train_step_lib.make_eval_step(cfg, model, mesh, shardings)
  step_rng = jax.random.key(cfg.train.seed + 1)
  train_iter = prefetch.Prefetcher(train_iter, lambda b: sharding.make_global_batch(b, mesh, rules))
  first_batch = next(train_iter)
  tokens_per_step = _tokens_per_step(first_batch)
  logging.info("mesh %s: %d devices in %d processes", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  logging.info("GLOBAL batch %d sequences, %d tokens per step; per device %g sequences, "
               "%g tokens; per process %d sequences", cfg.train.batch_size, tokens_per_step,
               cfg.train.batch_size / jax.device_count(), tokens_per_step / jax.device_count(),
               cfg.train.batch_size // jax.process_count())
  writer = metrics_lib.MetricsWriter(
      workdir, start_step=start_step, total_steps=cfg.train.steps,
      tokens_per_step=tokens_per_step, is_primary=is_primary,
      progress_bar=cfg.train.progress_bar, tensorboard=cfg.train.tensorboard)

  last_train, last_eval = {}, {}
  pending = []  # (step, device metrics) not yet checked for NaN.
  step = start_step
  last_saved = start_step if restored is not None else None
  preempted = False
  try:
    if preemption.requested():
      return _stopped_before_start(workdir, "during startup")
    while step < cfg.train.steps:
      if first_batch is not None:
        batch, first_batch = first_batch, None
      else:
        batch = next(train_iter)
      state, step_metrics = train_step(state, batch, jax.random.fold_in(step_rng, step))
      step += 1
      pending.append((step, step_metrics))

      is_last = step == cfg.train.steps
      log_now = step % cfg.train.log_every == 0 or step == start_step + 1 or is_last
      eval_now = step % cfg.train.eval_every == 0 or is_last
      stop_now = preemption.requested() or step == stop_at_step
      save_now = checkpointer.should_save(step) or is_last or stop_now
      if log_now or eval_now or save_now:
        history = jax.device_get(pending)
        pending = []
        bad = _first_non_finite(history)
        if bad is not None:
          bad_step, name, value, bad_metrics = bad
          writer.write_train(bad_step, bad_metrics)
          raise _non_finite_error(bad_step, name, value, last_saved)
        if log_now:
          last_train = writer.write_train(step, history[-1][1])
      if eval_now:
        sums, examples = evaluate(cfg, eval_step, state, mesh, rules)
        extra = task_evaluation.task_metrics(cfg, model, state, examples, tokenizer)
        last_eval = writer.write_eval(step, *sums, extra=extra)
      if save_now:
        if checkpointer.save(step, state, train_iter, force=True):
          last_saved = step
      if stop_now and not is_last:
        logging.warning("stopping early: checkpoint at step %d in %s", step,
                        checkpointer.step_path(step))
        preempted = preemption.requested()
        break
  finally:
    train_iter.close()
    try:
      checkpointer.close()
    finally:
      writer.close()

  if is_primary and cfg.train.plot:
    plot_path = metrics_lib.plot_loss_curves(workdir, title=os.path.basename(os.path.abspath(workdir)))
    last_eval = {**last_eval, "plot": plot_path}
  return {**last_train, **last_eval, "step": step, "preempted": preempted}
