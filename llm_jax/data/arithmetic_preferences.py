r"""Preference pairs on the generated arithmetic task: the correct answer chosen, a wrong one
rejected ("12+7=" -> chosen "19", rejected "18"), for reward models and the DPO family.

    python -m llm_jax.data.arithmetic_preferences --out=/tmp/arithmetic_preferences

Wrong answers are near misses (the answer off by 1 to 10, or with two digits swapped), the
mistakes a small model makes. Rows {"prompt", "chosen", "rejected", "answer"} go to train.jsonl
and validation.jsonl from the arithmetic task's disjoint train and held-out problems; configs
name them as 'arithmetic:preferences/train' and 'arithmetic:preferences/validation' (written
under data.data_dir on first use).
"""

import json
import os
import random

from absl import app
from absl import flags

from llm_jax import cli_flags
from llm_jax.data import arithmetic
from llm_jax.data import task_files

PREFIX = "arithmetic:"
TRAIN_PAIRS, VALIDATION_PAIRS = 4000, 400
TEMPLATE = "{prompt}"  # the arithmetic prompt already ends with '='


def wrong_answer(answer: str, rng: random.Random) -> str:
  """A near miss of the integer `answer`, never equal to it."""
  value = int(answer)
  digits = list(answer.lstrip("-"))
  if len(digits) >= 2 and digits[0] != digits[1] and rng.random() < 0.3:
    digits[0], digits[1] = digits[1], digits[0]
    swapped = ("-" if answer.startswith("-") else "") + "".join(digits)
    if swapped != answer and not swapped.lstrip("-").startswith("0"):
      return swapped
  offset = rng.choice([d for d in range(-10, 11) if d])
  return str(value + offset)


def preference_rows(problems, seed: int) -> list[dict]:
  rng = random.Random(seed)
  return [{"prompt": p["prompt"], "chosen": p["answer"],
           "rejected": wrong_answer(p["answer"], rng), "answer": p["answer"]} for p in problems]


def write_preferences(out_dir: str, seed: int = 0) -> dict[str, str]:
  """{'train': path, 'validation': path} of the preference rows written under out_dir."""
  train, held_out = arithmetic.train_and_held_out(TRAIN_PAIRS, VALIDATION_PAIRS, seed)
  paths = {}
  os.makedirs(out_dir, exist_ok=True)
  for split, problems, split_seed in (("train", train, seed), ("validation", held_out, seed + 1)):
    paths[split] = os.path.join(out_dir, f"{split}.jsonl")
    with open(paths[split], "w", encoding="utf-8") as f:
      for row in preference_rows(problems, split_seed):
        f.write(json.dumps(row) + "\n")
  return paths


def cached_path(name: str, data_dir: str, config_field: str) -> str:
  """The file of 'preferences/SPLIT' under data_dir, written (atomically) on first use."""
  dataset, _, split = name.partition("/")
  if dataset != "preferences" or split not in ("train", "validation"):
    raise ValueError(f"{config_field}='{PREFIX}{name}': expected '{PREFIX}preferences/train' or "
                     f"'{PREFIX}preferences/validation'")
  root = os.path.join(os.path.expanduser(data_dir), "arithmetic", "preferences")
  task_files.write_once(root, write_preferences)
  return os.path.join(root, f"{split}.jsonl")


FLAGS = cli_flags.flag_values(__name__)
_OUT = flags.DEFINE_string("out", None, "Directory to write the pairs into.", flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  for split, path in write_preferences(os.path.expanduser(_OUT.value)).items():
    print(f"{split}: {path}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out", flag_values=FLAGS)
  app.run(main)
