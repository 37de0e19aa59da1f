"""The first pass of a DPO / IPO run with task.reference='precomputed'.

The reference policy (the run's initial parameters: init_from, or the seeded initialisation)
scores both completions of every pair of the train and eval splits once; the sums of their
completion log-probabilities go to WORKDIR/reference_logps.npz ({split: [rows, 2]}), and the
train step reads them from the batch instead of holding a second copy of the parameters.
"""

import os

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from llm_jax import sharding
from llm_jax.data import preference_data
from llm_jax.data import task_files
from llm_jax.tasks import preference
from llm_jax.training import train_step as train_step_lib

FILENAME = "reference_logps.npz"


def resolve(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """cfg with task.reference_logps_file set (WORKDIR/reference_logps.npz when empty)."""
  if not preference_data.uses_precomputed_reference(cfg) or cfg.task.reference_logps_file:
    return cfg
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.task.reference_logps_file = os.path.join(workdir, FILENAME)
  return cfg


def _scorer(cfg, model):
  fields = train_step_lib.model_input_fields(cfg.model.family)

  @jax.jit
  def score(params, batch):
    outputs = model.apply({"params": params}, **{k: batch[k] for k in fields if k in batch},
                          deterministic=True)
    logps_B, _ = preference.sequence_logps(outputs["logits"], batch["targets"],
                                           batch["loss_weights"])
    return logps_B.reshape(-1, 2)

  return score


def split_logps(cfg, model, params, mesh, tokenizer, split: str, score=None) -> np.ndarray:
  """[rows, 2] sums of the completion log-probs of (chosen, rejected) under `params`."""
  rows = task_files.read_task_rows(cfg, split)
  examples = preference_data.PreferenceExamples(cfg, tokenizer)
  rules = sharding.rules_from_config(cfg)
  pairs_per_batch = cfg.train.batch_size // 2
  score = score or _scorer(cfg, model)
  out = np.zeros((len(rows), 2), np.float32)
  index, count = jax.process_index(), jax.process_count()
  with tqdm.tqdm(total=len(rows), desc=f"reference log-probs ({split})", unit="pair") as bar:
    for start in range(0, len(rows), pairs_per_batch):
      chunk = [examples(rows[i]) for i in range(start, min(start + pairs_per_batch, len(rows)))]
      chunk += [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * (pairs_per_batch - len(chunk))
      global_rows = {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
      local = {k: np.split(v, count)[index] for k, v in global_rows.items()}
      with sharding.mesh_context(mesh, rules):
        logps = score(params, sharding.make_global_batch(local, mesh, rules))
      logps = np.asarray(jax.device_get(logps))
      real = min(pairs_per_batch, len(rows) - start)
      out[start:start + real] = logps[:real]
      bar.update(real)
  return out


def ensure(cfg: ml_collections.ConfigDict, model, mesh, layout, initial_params) -> None:
  """Writes task.reference_logps_file (atomically) unless it exists already."""
  path = cfg.task.reference_logps_file
  if os.path.exists(path):
    return
  from llm_jax import data  # pylint: disable=g-import-not-at-top
  tokenizer = data.make_tokenizer(cfg.data)
  state, _ = train_step_lib.create_train_state(
      cfg, model, mesh, jax.random.key(cfg.train.seed), initial_params=initial_params,
      layout=layout)
  params = train_step_lib.full_params(state)
  del state
  found, score = {}, _scorer(cfg, model)
  for split in ("train", "eval"):
    name, _ = task_files.split_name(cfg, split)
    found[name] = split_logps(cfg, model, params, mesh, tokenizer, split, score)
    logging.info("reference log-probs of %d %s pairs: mean chosen %.3f, rejected %.3f",
                 len(found[name]), name, *np.mean(found[name], axis=0))
  if jax.process_index() == 0:
    partial = path + ".partial.npz"
    np.savez(partial, **found)
    os.replace(partial, path)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("reference_logps written")


def prepare(cfg: ml_collections.ConfigDict, workdir: str, model, mesh, layout
            ) -> ml_collections.ConfigDict:
  """The run's cfg, with its precomputed reference log-probs on disk when the task needs them."""
  cfg = resolve(cfg, workdir)
  if preference_data.uses_precomputed_reference(cfg) and not os.path.exists(
      cfg.task.reference_logps_file):
    from llm_jax import models  # pylint: disable=g-import-not-at-top
    from llm_jax.training import init_from  # pylint: disable=g-import-not-at-top
    initial = None
    if cfg.train.init_from:
      initial = init_from.initial_params(cfg, models.abstract_params(model, cfg.model))
    ensure(cfg, model, mesh, layout, initial)
  return cfg
