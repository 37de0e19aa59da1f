r"""A verifiable task: generated arithmetic problems ("12+7=" -> "19") and their exact-match reward.

    python -m llm_jax.data.arithmetic --out=/tmp/arithmetic    # train.jsonl, validation.jsonl

Problems are `{"prompt": "12+7=", "answer": "19"}` over operands 0..max_operand and the given
operators ('+', '-', '*'). `train_and_held_out` splits the whole problem space once (seeded), so
the held-out problems never appear in training. `write_sft_jsonl` writes rows
`{"prompt", "response", "answer"}` for `task.name='sft'` with `task.template='{prompt}'`: the
response is the answer followed by the tokenizer's EOS, which is where a rollout stops.
"""

import itertools
import json
import os
import random

from absl import app
from absl import flags

from llm_jax import cli_flags

OPERATORS = "+-"
MAX_OPERAND = 49
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _check(max_operand: int, operators: str) -> None:
  if not isinstance(max_operand, int) or max_operand < 1:
    raise ValueError(f"max_operand must be a positive integer, got {max_operand!r}")
  if not operators or any(op not in _APPLY for op in operators):
    raise ValueError(f"operators must be a non-empty string of {''.join(_APPLY)}, got "
                     f"{operators!r}")


def problem(a: int, op: str, b: int) -> dict:
  return {"prompt": f"{a}{op}{b}=", "answer": str(_APPLY[op](a, b))}


def all_problems(max_operand: int = MAX_OPERAND, operators: str = OPERATORS) -> list[dict]:
  """Every problem of the space, in a fixed order."""
  _check(max_operand, operators)
  operands = range(max_operand + 1)
  return [problem(a, op, b) for op in operators for a, b in itertools.product(operands, operands)]


def make_problems(num: int, seed: int, max_operand: int = MAX_OPERAND,
                  operators: str = OPERATORS) -> list[dict]:
  """`num` problems drawn uniformly (with repeats) from the whole space."""
  _check(max_operand, operators)
  rng = random.Random(seed)
  return [problem(rng.randint(0, max_operand), rng.choice(operators),
                  rng.randint(0, max_operand)) for _ in range(num)]


def train_and_held_out(num_train: int, num_held_out: int, seed: int,
                       max_operand: int = MAX_OPERAND,
                       operators: str = OPERATORS) -> tuple[list[dict], list[dict]]:
  """(train, held_out): disjoint problems; the held-out ones are distinct, the train ones are
  the rest of the space in a seeded order (repeated when `num_train` exceeds it)."""
  space = all_problems(max_operand, operators)
  if num_held_out >= len(space):
    raise ValueError(f"num_held_out={num_held_out} leaves no training problem: the space of "
                     f"max_operand={max_operand} operators={operators!r} has {len(space)}")
  random.Random(seed).shuffle(space)
  held_out, rest = space[:num_held_out], space[num_held_out:]
  train = [rest[i % len(rest)] for i in range(num_train)]
  return train, held_out


def exact_match(completion: str, answer: str) -> float:
  """1.0 when the completion, up to its first newline and without surrounding spaces, is the
  answer; else 0.0."""
  return float(completion.split("\n", 1)[0].strip() == str(answer).strip())


def write_sft_jsonl(path: str, problems: list[dict]) -> str:
  """Writes rows {"prompt", "response", "answer"} (atomically) and returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  partial = path + ".partial"
  with open(partial, "w", encoding="utf-8") as f:
    for row in problems:
      f.write(json.dumps({"prompt": row["prompt"], "response": row["answer"],
                          "answer": row["answer"]}) + "\n")
  os.replace(partial, path)
  return path


def read_problems(path: str) -> list[dict]:
  """Rows {"prompt", "answer", ...} of a JSONL file; a row without them is named by line."""
  problems = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_number}: not valid JSON: {e}") from e
      if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise ValueError(f"{path}:{line_number}: expected an object with a 'prompt' string")
      problems.append(row)
  if not problems:
    raise ValueError(f"{path} holds no rows")
  return problems


def write_splits(out_dir: str, num_train: int = 20000, num_held_out: int = 400, seed: int = 0,
                 max_operand: int = MAX_OPERAND, operators: str = OPERATORS) -> dict[str, str]:
  """{'train': path, 'validation': path} of SFT rows of the disjoint splits under out_dir."""
  train, held_out = train_and_held_out(num_train, num_held_out, seed, max_operand, operators)
  return {"train": write_sft_jsonl(os.path.join(out_dir, "train.jsonl"), train),
          "validation": write_sft_jsonl(os.path.join(out_dir, "validation.jsonl"), held_out)}


FLAGS = cli_flags.flag_values(__name__)
_OUT = flags.DEFINE_string("out", None, "Directory to write train/validation JSONL into.",
                           flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  for split, path in write_splits(os.path.expanduser(_OUT.value)).items():
    print(f"{split}: {path}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out", flag_values=FLAGS)
  app.run(main)
