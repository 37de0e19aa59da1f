"""The workdir a run resumes from: checked before anything in it is written or moved.

A rerun resumes only if its config describes the same run as the workdir's `config.json`: the
same model (architecture and every field that shapes the parameter tree), task, data, tokenizer
and objective. Cadences (`train.steps`, logging, eval, checkpoints), the learning-rate schedule
and the mesh may change on resume. `train.overwrite=True` starts over: the previous run's
workdir is renamed aside (nothing is deleted) and a fresh one is created.
"""

import datetime
import json
import os

from absl import logging

CONFIG_FILE = "config.json"

# Sections whose every field must match on resume, except the EXEMPT ones.
COMPARED_SECTIONS = ("model", "task", "data", "objective")
# Single fields of other sections that change the state tree or the data stream.
COMPARED_FIELDS = ("optimizer.name", "optimizer.trainable", "optimizer.frozen",
                   "train.batch_size", "train.seed")
# Fields of compared sections that change neither the parameters nor the data.
EXEMPT_FIELDS = ("model.attention_impl", "model.attention_interpret", "model.remat_policy",
                 "data.data_dir", "data.tfds_data_dir", "data.tfds_download", "data.num_workers",
                 "task.reference_logps_file", "task.eval_generate_examples",
                 "task.eval_max_new_tokens")

OVERWRITE_HINT = ("to start over in this workdir add --config.train.overwrite=True (the old run "
                  "is renamed aside), or pass a new --workdir")


class ConfigError(ValueError):
  """A user error found before the run starts (exit code 2); nothing has been written."""


class WorkdirMismatchError(ConfigError):
  """The workdir holds a run of another config; it was left untouched."""


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flat(value, name + "."))
    else:
      out[name] = value
  return out


def _compared(name):
  if name in EXEMPT_FIELDS or any(name.startswith(f + ".") for f in EXEMPT_FIELDS):
    return False
  return name.split(".")[0] in COMPARED_SECTIONS or name in COMPARED_FIELDS


def config_differences(saved: dict, current: dict) -> list[str]:
  """'field: saved -> current' for every compared field set in both configs that differs.

  Fields only one of them has (added or removed by a code change) are not compared.
  """
  old, new = _flat(saved), _flat(current)
  return [f"{name}: {old[name]!r} in the workdir, {new[name]!r} now"
          for name in sorted(old.keys() & new.keys())
          if _compared(name) and old[name] != new[name]]


def config_as_json(cfg) -> dict:
  return json.loads(cfg.to_json_best_effort(sort_keys=True))


def has_checkpoints(workdir: str, checkpoint_dir: str = "checkpoints") -> bool:
  directory = os.path.join(workdir, checkpoint_dir)
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def check_location(workdir: str) -> None:
  """The workdir is a directory (or can be created) that this process can write."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} exists and is not a directory")
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"--workdir={workdir}: {existing} is not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir}: {existing} is not writable (read-only filesystem "
                      "or no permission)")


def check_resumable(cfg, workdir: str) -> None:
  """Raises WorkdirMismatchError if `workdir` holds checkpoints of a run with another config.

  Reads only; with train.overwrite the comparison is skipped (see `start_over`).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if cfg.train.get("overwrite") or not has_checkpoints(workdir) or not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirMismatchError(f"{path} is unreadable ({e}); cannot tell whether the checkpoints "
                               f"in {workdir} belong to this config; {OVERWRITE_HINT}") from e
  differences = config_differences(saved, config_as_json(cfg))
  if differences:
    shown = "\n  ".join(differences[:12])
    more = f"\n  ... and {len(differences) - 12} more" if len(differences) > 12 else ""
    raise WorkdirMismatchError(
        f"{workdir} holds checkpoints of a run with another config (nothing was changed):\n  "
        f"{shown}{more}\n{OVERWRITE_HINT}")


def start_over(workdir: str) -> str | None:
  """With train.overwrite: renames a non-empty `workdir` to WORKDIR.overwritten-TIME and logs
  it. Returns the new name (None if there was nothing to move)."""
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    return None
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  aside = f"{os.path.abspath(workdir).rstrip(os.sep)}.overwritten-{stamp}"
  suffix = 1
  while os.path.exists(aside):
    aside = f"{os.path.abspath(workdir).rstrip(os.sep)}.overwritten-{stamp}-{suffix}"
    suffix += 1
  os.rename(workdir, aside)
  logging.warning("train.overwrite=True: moved the previous run in %s (checkpoints, metrics, "
                  "config.json) to %s; delete that directory when it is no longer needed",
                  workdir, aside)
  return aside
