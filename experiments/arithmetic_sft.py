r"""The starting policy of the RL configs: the LLaMA-style tiny decoder trained from scratch on
generated arithmetic ("12+7=" -> "19", llm_jax/data/arithmetic.py) with the `sft` task.

PYTHONPATH=. python experiments/arithmetic_sft.py --out=workdirs/arithmetic_sft   # ~2-3 min, 2 CPUs
PYTHONPATH=. python experiments/arithmetic_sft.py --out=/tmp/sft --quick          # seconds

then configs/grpo_tiny.py and configs/ppo_tiny.py start from it (train.init_from=
workdir:workdirs/arithmetic_sft). The data (disjoint train / held-out problems) goes to
OUT/data; the run is an ordinary training workdir (rerunning resumes). At the end the held-out
exact match of greedy answers is measured with the KV-cache decoder and written to
OUT/held_out_accuracy.json.
"""

import json
import os

from absl import app
from absl import flags

from llm_jax import cli_flags
from llm_jax import config as config_lib
from llm_jax.data import arithmetic

FLAGS = cli_flags.flag_values(__name__)
_OUT = flags.DEFINE_string("out", None, "The SFT workdir to write.", flag_values=FLAGS)
_QUICK = flags.DEFINE_bool("quick", False, "A few steps of a smaller model (for tests).",
                           flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps (without --quick).", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Data and initialisation seed.", flag_values=FLAGS)

HELD_OUT = 400  # the held-out problems the RL configs evaluate on (same seed, same split)


def sft_config(data_dir: str, steps: int, seed: int = 0, quick: bool = False):
  """The SFT experiment config on the arithmetic JSONL files under data_dir."""
  paths = arithmetic.write_splits(data_dir, seed=seed, num_held_out=HELD_OUT)
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "sft"
  cfg.task.template = "{prompt}"
  cfg.task.eval_generate_examples = 64
  cfg.task.eval_max_new_tokens = 6
  cfg.data.train_files = paths["train"]
  cfg.data.eval_files = paths["validation"]
  cfg.data.sequence_length = 32  # about three packed problems per row
  cfg.optimizer.learning_rate = 3e-3
  cfg.optimizer.warmup_steps = 50
  cfg.optimizer.weight_decay = 0.0
  cfg.train.seed = seed
  cfg.train.batch_size = 64
  cfg.train.steps = steps
  cfg.train.log_every = 100
  cfg.train.eval_every = max(steps // 3, 1)
  cfg.train.eval_batches = 4
  cfg.train.checkpoint_every = 0
  cfg.train.keep_checkpoints = 1
  if quick:
    cfg.model.update(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, d_ff=64)
    cfg.train.update(batch_size=16, log_every=5, eval_batches=1, progress_bar=False,
                     tensorboard=False, plot=False)
    cfg.task.eval_generate_examples = 8
  return cfg


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  # pylint: disable=g-import-not-at-top
  from llm_jax.alignment import evaluation
  from llm_jax.training import loop
  # pylint: enable=g-import-not-at-top
  out = os.path.expanduser(_OUT.value)
  steps = 20 if _QUICK.value else _STEPS.value
  cfg = sft_config(os.path.join(out, "data"), steps, _SEED.value, _QUICK.value)
  loop.train(cfg, out)
  _, held_out = arithmetic.train_and_held_out(0, HELD_OUT, _SEED.value)
  accuracy = evaluation.workdir_exact_match(out, held_out, max_new_tokens=6)
  result = {"workdir": out, "steps": steps, "held_out_problems": len(held_out),
            "held_out_exact_match": accuracy}
  with open(os.path.join(out, "held_out_accuracy.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flag_as_required("out", flag_values=FLAGS)
  app.run(main)
