r"""Compress a trained or converted model into a new workdir.

  python -m llm_jax.compress --workdir=workdirs/gpt_tiny --method=int8 --out=workdirs/gpt_tiny_int8
  python -m llm_jax.compress --workdir=workdirs/gpt_tiny --method=gptq --group_size=32 \
      --out=workdirs/gpt_tiny_gptq        # int4; calibration batches from the run's train data
  python -m llm_jax.compress --hf=/path/to/gpt2 --method=awq --calibration_file=texts.txt \
      --group_size=128 --out=/tmp/gpt2_awq
  python -m llm_jax.compress --workdir=RUN --method=prune --sparsity=0.5 [--pattern=2:4] --out=OUT
  python -m llm_jax.compress --workdir=RUN --method=prune --pattern=heads --sparsity=0.25 --out=OUT
  python -m llm_jax.compress --workdir=RUN --method=lowrank --energy=0.9 --out=OUT

methods: int8, int4 (round to nearest), gptq, awq (int4 by default, --bits=8 for int8), prune,
lowrank. OUT is a workdir that `python -m llm_jax.generate --workdir=OUT` and
`python -m llm_jax.evaluate --workdir=OUT` read; OUT/compression.json holds bytes and
parameter counts before and after. OUT is written whole or not at all.
"""

import json
import sys

from absl import app
from absl import flags

from llm_jax import cli_flags

METHODS = ("int8", "int4", "gptq", "awq", "prune", "lowrank")
FLAGS = cli_flags.flag_values(__name__)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to compress.", flag_values=FLAGS)
_HF = flags.DEFINE_string("hf", None, "Hugging Face folder to compress.", flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: latest).",
                             flag_values=FLAGS)
_METHOD = flags.DEFINE_enum("method", None, METHODS, "Compression method.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "New workdir to write (must not exist or be empty).",
                           flag_values=FLAGS)
_BITS = flags.DEFINE_enum("bits", "4", ["4", "8"], "gptq / awq: integer width.",
                          flag_values=FLAGS)
_GROUP_SIZE = flags.DEFINE_integer("group_size", 0, "Contracted values per scale (0: one scale "
                                   "per output channel); must divide every targeted layer's "
                                   "contracted size.", flag_values=FLAGS)
_TARGETS = flags.DEFINE_string("targets", ".", "Regex of the dense layer paths to compress.",
                               flag_values=FLAGS)
_CALIBRATION_BATCHES = flags.DEFINE_integer("calibration_batches", 4, "gptq / awq: batches of "
                                            "the run's train data.", flag_values=FLAGS)
_CALIBRATION_FILE = flags.DEFINE_string("calibration_file", None, "gptq / awq: a text file to "
                                        "calibrate on (needed with --hf).", flag_values=FLAGS)
_SPARSITY = flags.DEFINE_float("sparsity", 0.5, "prune: fraction of weights (or heads / "
                               "neurons) removed, in [0, 1).", flag_values=FLAGS)
_PATTERN = flags.DEFINE_enum("pattern", "unstructured", ["unstructured", "2:4", "heads",
                                                         "neurons"], "prune: what is removed.",
                             flag_values=FLAGS)
_SCOPE = flags.DEFINE_enum("scope", "layer", ["layer", "global"], "prune unstructured: one "
                           "threshold per kernel or one for all.", flag_values=FLAGS)
_RANK = flags.DEFINE_integer("rank", 0, "lowrank: rank of every factorised kernel.",
                             flag_values=FLAGS)
_ENERGY = flags.DEFINE_float("energy", 0.0, "lowrank: smallest rank keeping this fraction of "
                             "each kernel's squared singular values (instead of --rank).",
                             flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _METHOD.value is None or _OUT.value is None:
    raise app.UsageError("--method and --out are required")
  # pylint: disable=g-import-not-at-top
  from llm_jax.compress import checkpoint
  from llm_jax.compress import methods
  from llm_jax.compress import source
  # pylint: enable=g-import-not-at-top
  try:
    checkpoint.check_out(_OUT.value)
    cfg, model, params, tokenizer, tokenizer_file = source.load(_WORKDIR.value, _HF.value,
                                                                _STEP.value)
    new_params, new_cfg, report = methods.run(
        cfg, model, params, tokenizer, method=_METHOD.value, bits=int(_BITS.value),
        group_size=_GROUP_SIZE.value, targets=_TARGETS.value,
        calibration_batches=_CALIBRATION_BATCHES.value,
        calibration_file=_CALIBRATION_FILE.value, sparsity=_SPARSITY.value,
        pattern=_PATTERN.value, scope=_SCOPE.value, rank=_RANK.value, energy=_ENERGY.value)
    report["source"] = _WORKDIR.value or _HF.value
    checkpoint.write_workdir(_OUT.value, new_cfg, new_params, report, tokenizer_file)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report, indent=2))
  print(f"wrote {_OUT.value}")
  return 0


if __name__ == "__main__":
  app.run(main)
