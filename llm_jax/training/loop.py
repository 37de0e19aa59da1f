"""The training loop: `train(cfg, workdir)`.

Rerunning with the same workdir resumes from the latest checkpoint and continues exactly: the
per-step rng is folded from the step number and the data iterator state is checkpointed.
"""

import os
import signal

from absl import logging
import jax
import numpy as np

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import init_from as init_from_lib
from llm_jax.training import metrics as metrics_lib
from llm_jax.training import partition
from llm_jax.training import reference_pass
from llm_jax.training import task_evaluation
from llm_jax.training import train_step as train_step_lib


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the run stopped without saving that state."""


class _PreemptionFlag:
  """Set by SIGTERM; the loop checks it between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      del frame
      logging.warning("received signal %d: saving a checkpoint and stopping", signum)
      self.requested = True
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # Not the main thread: no preemption handling.
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


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
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")


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


def _check_finite(history):
  """history: [(step, host metrics)]; raises at the first step whose loss is not finite."""
  for step, m in history:
    if not np.isfinite(m["loss"]):
      raise NonFiniteLossError(
          f"loss is {float(m['loss'])} at step {step}; stopping. The last good checkpoint is "
          "kept; lower the learning rate or check the data, then rerun to resume.")


def train(cfg, workdir, stop_at_step=None):
  """Trains cfg.train.steps steps in `workdir` (resuming if it holds a checkpoint).

  `stop_at_step` ends this call early, with a checkpoint, as a preemption there would; the
  schedule still spans cfg.train.steps. Returns the last train and eval metrics as one dict.
  """
  cfg = config_lib.finalize(cfg)
  os.makedirs(workdir, exist_ok=True)
  is_primary = jax.process_index() == 0
  if is_primary:
    _write_config(cfg, workdir)

  mesh = sharding.make_mesh(cfg.mesh)
  rules = sharding.rules_from_config(cfg)
  model = models.build_model(cfg.model)
  tokenizer = data.make_tokenizer(cfg.data)

  checkpointer = checkpoint_lib.Checkpointer(
      workdir, save_every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints,
      async_save=cfg.train.async_checkpointing)
  layout = train_step_lib.state_layout(cfg, model, mesh)
  cfg = reference_pass.prepare(cfg, workdir, model, mesh, layout)
  train_iter = make_process_pipeline(cfg, "train")
  abstract_state, shardings = layout.abstract_state, layout.shardings
  restored = checkpointer.restore_latest(abstract_state, shardings, train_iter)
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
  first_batch = sharding.make_global_batch(next(train_iter), mesh, rules)
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
  preempted = False
  try:
    with _PreemptionFlag() as preemption:
      while step < cfg.train.steps:
        if first_batch is not None:
          batch, first_batch = first_batch, None
        else:
          batch = sharding.make_global_batch(next(train_iter), mesh, rules)
        state, step_metrics = train_step(state, batch, jax.random.fold_in(step_rng, step))
        step += 1
        pending.append((step, step_metrics))

        is_last = step == cfg.train.steps
        log_now = step % cfg.train.log_every == 0 or step == start_step + 1 or is_last
        eval_now = step % cfg.train.eval_every == 0 or is_last
        stop_now = preemption.requested or step == stop_at_step
        save_now = checkpointer.should_save(step) or is_last or stop_now
        if log_now or eval_now or save_now:
          history = jax.device_get(pending)
          pending = []
          _check_finite(history)
          if log_now:
            last_train = writer.write_train(step, history[-1][1])
        if eval_now:
          sums, examples = evaluate(cfg, eval_step, state, mesh, rules)
          extra = task_evaluation.task_metrics(cfg, model, state, examples, tokenizer)
          last_eval = writer.write_eval(step, *sums, extra=extra)
        if save_now:
          checkpointer.save(step, state, train_iter, force=True)
        if stop_now and not is_last:
          logging.warning("stopping early: checkpoint at step %d in %s", step,
                          checkpointer.step_path(step))
          preempted = preemption.requested
          break
  finally:
    checkpointer.close()
    writer.close()

  if is_primary and cfg.train.plot:
    plot_path = metrics_lib.plot_loss_curves(workdir, title=os.path.basename(os.path.abspath(workdir)))
    last_eval = {**last_eval, "plot": plot_path}
  return {**last_train, **last_eval, "step": step, "preempted": preempted}
