r"""The reward model and DPO on arithmetic preference pairs, from the arithmetic SFT policy.

PYTHONPATH=. python experiments/arithmetic_sft.py --out=workdirs/arithmetic_sft
PYTHONPATH=. python experiments/preference_arithmetic.py --sft=workdirs/arithmetic_sft

Trains configs/reward_model_tiny.py and configs/dpo_tiny.py from the SFT workdir (into
WORKDIRS/reward_model_tiny and WORKDIRS/dpo_tiny), then measures the held-out exact match of
the SFT and the DPO policies by greedy decoding. Writes OUT/preference_arithmetic.{json,md,png}: the held-out
preference accuracy of both against the step, and the exact matches.
"""

import importlib
import json
import os
import sys

from absl import app
from absl import flags

from llm_jax import cli_flags

FLAGS = cli_flags.flag_values(__name__)
_SFT = flags.DEFINE_string("sft", "workdirs/arithmetic_sft", "The SFT workdir.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "experiments/results/preference_arithmetic", "Output directory.",
                           flag_values=FLAGS)
_WORKDIRS = flags.DEFINE_string("workdirs", "workdirs/preference_arithmetic",
                                "Where the two training workdirs go.", flag_values=FLAGS)
_RM_STEPS = flags.DEFINE_integer("rm_steps", 0, "Reward-model steps (0: the config's).",
                                 flag_values=FLAGS)
_DPO_STEPS = flags.DEFINE_integer("dpo_steps", 0, "DPO steps (0: the config's).", flag_values=FLAGS)

HELD_OUT = 400


def run(name: str, sft: str, workdir: str, steps: int) -> list[dict]:
  # pylint: disable=g-import-not-at-top
  from llm_jax.training import loop
  from llm_jax.training import metrics as metrics_lib
  # pylint: enable=g-import-not-at-top
  cfg = importlib.import_module(f"configs.{name}").get_config()
  cfg.train.init_from = f"workdir:{sft}"
  if steps:
    cfg.train.steps = steps
    cfg.train.eval_every = max(steps // 4, 1)
  loop.train(cfg, workdir)
  return metrics_lib.read_rows(workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from llm_jax.alignment import evaluation
  from llm_jax.data import arithmetic
  # pylint: enable=g-import-not-at-top
  out = os.path.expanduser(_OUT.value)
  os.makedirs(out, exist_ok=True)
  curves = {}
  for name, steps in (("reward_model_tiny", _RM_STEPS.value), ("dpo_tiny", _DPO_STEPS.value)):
    rows = run(name, _SFT.value, os.path.join(_WORKDIRS.value, name), steps)
    curves[name] = [(r["step"], r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
  _, held_out = arithmetic.train_and_held_out(0, HELD_OUT, 0)
  policies = (("sft", _SFT.value), ("dpo", os.path.join(_WORKDIRS.value, "dpo_tiny")))
  exact = {label: evaluation.workdir_exact_match(path, held_out, max_new_tokens=6)
           for label, path in policies}
  result = {"preference_accuracy": curves, "held_out_exact_match": exact,
            "command": "PYTHONPATH=. python experiments/preference_arithmetic.py "
                       f"--sft={_SFT.value}"}
  with open(os.path.join(out, "preference_arithmetic.json"), "w") as f:
    json.dump(result, f, indent=2)
  lines = ["| run | held-out preference accuracy by step |", "|---|---|"]
  for name, points in curves.items():
    lines.append(f"| {name} | " + ", ".join(f"{s}: {a:.3f}" for s, a in points) + " |")
  lines += ["", f"Held-out exact match: SFT {exact['sft']:.4f}, after DPO {exact['dpo']:.4f}"]
  with open(os.path.join(out, "preference_arithmetic.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for name, points in curves.items():
    ax.plot(*zip(*points), marker="o", label=name)
  ax.set(xlabel="step", ylabel="held-out preference accuracy",
         title="reward model and DPO on arithmetic pairs")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out, "preference_arithmetic.png"), dpi=120)
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
