r"""The training loop's step rate against the bare jitted train step, for one config.

PYTHONPATH=. python experiments/loop_overhead.py --config=configs/gpt_tiny.py --steps=300

Bare: experiments/benchmark.py's JaxRunner (the compiled step on one fixed batch, nothing
else). Loop: llm_jax.training.loop.train on the config's real data pipeline, with the
background batch prefetcher and, for comparison, with batches read synchronously in the loop's
thread. Loop rates come from metrics.jsonl (steps/s between log rows, evaluation excluded,
the first row dropped). The three are measured in turns (bare, loop, synchronous loop, bare,
...) so that all see the same machine load; medians are reported.
"""

import os
import statistics
import sys
import tempfile

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position

from llm_jax import cli_flags  # pylint: disable=wrong-import-position
from llm_jax import config as config_lib  # pylint: disable=wrong-import-position
from llm_jax.training import loop  # pylint: disable=wrong-import-position
from llm_jax.training import metrics as metrics_lib  # pylint: disable=wrong-import-position
from llm_jax.training import prefetch  # pylint: disable=wrong-import-position

FLAGS = cli_flags.flag_values(__name__)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 300, "Steps per loop run.", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Turns of (bare, loop, synchronous loop).",
                               flag_values=FLAGS)


class _Synchronous:
  """The Prefetcher's interface without the thread: the loop as it was before it."""

  def __init__(self, iterator, place=lambda b: b, depth=2):
    del depth
    self._iterator, self._place = iterator, place

  def __iter__(self):
    return self

  def __next__(self):
    return self._place(next(self._iterator))

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)

  def close(self):
    pass


def loop_rate(cfg, synchronous: bool) -> float:
  """Median steps/s of one fresh loop run (log rows after the first)."""
  original = prefetch.Prefetcher
  prefetch.Prefetcher = _Synchronous if synchronous else original
  try:
    workdir = tempfile.mkdtemp(prefix="loop_overhead_")
    loop.train(cfg, workdir)
  finally:
    prefetch.Prefetcher = original
  rates = [r["steps_per_sec"] for r in metrics_lib.read_rows(workdir) if "steps_per_sec" in r]
  return statistics.median(rates[1:])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = _CONFIG.value
  cfg.train.update(dict(steps=_STEPS.value, log_every=25, eval_every=10 ** 9, eval_batches=1,
                        checkpoint_every=0, tensorboard=False, plot=False, progress_bar=False))
  cfg = benchmark.prepare_config(config_lib.finalize(cfg))
  bare = benchmark.JaxRunner(cfg, benchmark.random_batch(cfg, np.random.default_rng(0)))
  bare.run(5)
  rates = {"bare": [], "loop": [], "loop_synchronous": []}
  for _ in range(_ROUNDS.value):
    rates["bare"].append(_STEPS.value / 2 / bare.run(_STEPS.value // 2))
    rates["loop"].append(loop_rate(cfg, synchronous=False))
    rates["loop_synchronous"].append(loop_rate(cfg, synchronous=True))
  medians = {k: statistics.median(v) for k, v in rates.items()}
  for name, values in rates.items():
    print(f"{name:17s} steps/s per round: " + " ".join(f"{v:.2f}" for v in values)
          + f"  median {medians[name]:.2f} ({1000 / medians[name]:.1f} ms/step)")
  print(f"loop / bare: {medians['loop'] / medians['bare']:.3f}; synchronous loop / bare: "
        f"{medians['loop_synchronous'] / medians['bare']:.3f}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"], flag_values=FLAGS)
  app.run(main)
