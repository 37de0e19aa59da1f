r"""Train a language model.

  python -m llm_jax.train --config=configs/gpt_tiny.py --workdir=/tmp/gpt_tiny \
      [--config.train.steps=100 ...]

Running the same command again resumes from the latest checkpoint in --workdir.
Multi-process: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or set
LLM_JAX_COORDINATOR, LLM_JAX_NUM_PROCESSES, LLM_JAX_PROCESS_ID).
"""

import difflib
import importlib.util
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from llm_jax import cli_flags

FLAGS = cli_flags.flag_values(__name__)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          flag_values=FLAGS, lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.",
                               flag_values=FLAGS)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (default: $LLM_JAX_COORDINATOR).",
    flag_values=FLAGS)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (default: $LLM_JAX_NUM_PROCESSES or 1).",
    flag_values=FLAGS)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (default: $LLM_JAX_PROCESS_ID).", flag_values=FLAGS)

flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _quiet_libraries(record):
  """Keeps INFO lines from llm_jax; libraries (orbax, jax) only show warnings and errors."""
  return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def _config_overrides(argv):
  """(config file, [dotted keys]) of --config=FILE and --config.a.b=VALUE in argv."""
  path, keys = None, []
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg[len("--config="):]
    elif arg.startswith("--config."):
      keys.append(arg[len("--config."):].split("=", 1)[0])
  return path, keys


def _unknown_key_message(argv):
  """'unknown config key config.train.stepz (did you mean config.train.steps?)', or None."""
  path, keys = _config_overrides(argv)
  if not path or not keys:
    return None
  file_path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("llm_jax_cli_config", file_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config(arg) if arg else module.get_config()
  for key in keys:
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
      children = list(node.keys()) if hasattr(node, "keys") else []
      if part not in children:
        parent = ".".join(["config", *parts[:depth]])
        close = difflib.get_close_matches(part, children, n=1)
        hint = f" (did you mean {parent}.{close[0]}?)" if close else (
            f" ({parent} has {', '.join(sorted(children))})" if children else "")
        return f"unknown config key config.{key}{hint}"
      node = node[part]
  return None


def _parse_flags(argv):
  """absl's flag parsing, with a one-line message and exit code 2 for a bad --config.*."""
  from llm_jax.training import preemption  # pylint: disable=g-import-not-at-top
  preemption.install()  # SIGTERM from here on is a clean stop, even during startup.
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = str(e).strip().splitlines()[-1]
    sys.stderr.write(f"error: {message}\nPass --helpshort to see the flags.\n")
    sys.exit(2)
  except (AttributeError, KeyError):
    try:
      message = _unknown_key_message(argv)
    except Exception:  # pylint: disable=broad-except
      message = None
    if message is None:
      raise
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_quiet_libraries)  # absl.logging calls (orbax, ...)
  logging.get_absl_handler().addFilter(_quiet_libraries)  # stdlib logging calls (jax, ...)
  # pylint: disable=g-import-not-at-top
  from llm_jax import distributed
  distributed.maybe_initialize(coordinator_address=_COORDINATOR_ADDRESS.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  import jax
  from llm_jax import config as config_lib
  from llm_jax.alignment import rl_loop
  from llm_jax.training import checkpoint
  from llm_jax.training import loop
  # pylint: enable=g-import-not-at-top

  try:
    cfg = config_lib.finalize(_CONFIG.value)
  except ValueError as e:
    logging.error("invalid config: %s", e)
    print(f"invalid config: {e}", file=sys.stderr)
    return 2
  try:
    if cfg.task.name in rl_loop.METHODS:  # RL with a policy that generates
      result = rl_loop.train(cfg, _WORKDIR.value)
    else:
      result = loop.train(cfg, _WORKDIR.value)
  except loop.ConfigError as e:  # The user's input; nothing was written.
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (loop.NonFiniteLossError, rl_loop.RewardError, checkpoint.CheckpointWriteError,
          checkpoint.NoUsableCheckpointError) as e:
    logging.error("%s", e)
    print(f"training stopped: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    if result.get("started") is False:
      print(f"stopped by SIGTERM before the first step (latest checkpoint: step "
            f"{result['step']}); rerun the same command to start or resume")
    elif result.get("preempted"):
      print(f"preempted at step {result['step']}; checkpoint saved, rerun the same command to "
            "resume")
    if "eval_loss" in result:
      print(f"final eval at step {result['step']}: loss {result['eval_loss']:.4f} "
            f"perplexity {result['eval_perplexity']:.2f} accuracy {result['eval_accuracy']:.4f}")
    if "plot" in result:
      print(f"loss curve: {result['plot']}")
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
