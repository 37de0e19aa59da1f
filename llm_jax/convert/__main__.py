"""Converts between Hugging Face folders and llm_jax checkpoints.

python -m llm_jax.convert from_hf --hf=HF_FOLDER --out=OUT_DIR      # -> OUT_DIR/{model_config.json, params/}
python -m llm_jax.convert to_hf --src=OUT_DIR --out=HF_FOLDER        # -> a folder transformers loads
python -m llm_jax.convert to_hf --workdir=RUN --out=HF_FOLDER        # a run's latest checkpoint

From a run fine-tuned with LoRA or (IA)^3, to_hf writes a plain model: the adapters are merged
into the base weights first (prefix and prompt tuning and adapters cannot merge: an error).
"""

import json
import os
import shutil
import sys

import ml_collections
import orbax.checkpoint as ocp
from absl import app, flags

from llm_jax import cli_flags, convert, models

FLAGS = cli_flags.flag_values(__name__)
flags.DEFINE_string("hf", None, "Hugging Face model folder to read (from_hf).", flag_values=FLAGS)
flags.DEFINE_string("src", None, "llm_jax converted folder to read (to_hf).", flag_values=FLAGS)
flags.DEFINE_string("workdir", None, "llm_jax training workdir to read (to_hf).", flag_values=FLAGS)
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the latest).",
                     flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output folder; must not exist or be empty.", flag_values=FLAGS)


def save_converted(model_cfg, params, out: str) -> None:
  if os.path.exists(out) and os.listdir(out):
    raise convert.ConversionError(f"output folder {out!r} exists and is not empty")
  staging = out.rstrip("/") + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    os.makedirs(staging)
    with open(os.path.join(staging, "model_config.json"), "w") as f:
      f.write(model_cfg.to_json(indent=2))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(os.path.join(staging, "params")), params)
    checkpointer.wait_until_finished()
    checkpointer.close()
    if os.path.exists(out):
      os.rmdir(out)
    os.rename(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def load_converted(src: str):
  with open(os.path.join(src, "model_config.json")) as f:
    model_cfg = ml_collections.ConfigDict(json.load(f))
  model = models.build_model(model_cfg)
  params = ocp.StandardCheckpointer().restore(
    os.path.abspath(os.path.join(src, "params")), models.abstract_params(model, model_cfg)
  )
  return model, params, model_cfg


def load_workdir(workdir: str, step: int | None):
  """(model, params, model_cfg) of a run's checkpoint, peft adapters merged into the base."""
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  from llm_jax.peft import merge  # pylint: disable=g-import-not-at-top
  model, params, cfg, _ = load.load_from_workdir(workdir, step=step)
  model_cfg, params = merge.merge_peft(cfg.model, params)
  return model, params, model_cfg


def main(argv):
  if len(argv) != 2 or argv[1] not in ("from_hf", "to_hf"):
    sys.exit(
      "usage: python -m llm_jax.convert {from_hf --hf=FOLDER | to_hf --src=FOLDER} --out=FOLDER"
    )
  if not FLAGS.out:
    sys.exit("--out is required")
  try:
    if argv[1] == "from_hf":
      _, params, model_cfg = convert.from_hf(FLAGS.hf)
      save_converted(model_cfg, params, FLAGS.out)
    else:
      if bool(FLAGS.src) == bool(FLAGS.workdir):
        sys.exit("to_hf needs exactly one of --src (a converted folder) or --workdir (a run)")
      if FLAGS.workdir:
        _, params, model_cfg = load_workdir(FLAGS.workdir, FLAGS.step)
      else:
        _, params, model_cfg = load_converted(FLAGS.src)
      convert.to_hf(model_cfg, params, FLAGS.out)
  except (convert.ConversionError, FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
