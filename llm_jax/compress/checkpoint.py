"""Compressed workdirs: written whole or not at all, loaded as (model, params, cfg, tokenizer).

A compressed workdir looks like a training workdir (config.json, checkpoints/STEP/state with a
`params` tree) so that `llm_jax.generate`, `llm_jax.evaluate` and `train.init_from` read it.
A QuantizedArray is stored as its arrays ({codes, scales[, input_scales]}: the packed integers,
not a dequantized copy); their static layout (kind, block, shape, ...) is in
checkpoints/STEP/quantized_layout.json.
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from llm_jax.peft import quantize

LAYOUT_FILE = "quantized_layout.json"
REPORT_FILE = "compression.json"
_STATIC = ("kind", "block_size", "shape", "dtype", "contract_dims", "lead_dims")


def _to_storage(params):
  """(tree of plain arrays, {'a/b/kernel': static layout}) of a params tree."""
  layouts = {}

  def visit(node, path):
    if isinstance(node, quantize.QuantizedArray):
      layouts["/".join(path)] = {k: getattr(node, k) for k in _STATIC}
      arrays = {"codes": node.codes, "scales": node.scales}
      if node.input_scales is not None:
        arrays["input_scales"] = node.input_scales
      return {k: np.asarray(v) for k, v in arrays.items()}
    if isinstance(node, dict):
      return {k: visit(v, path + (k,)) for k, v in node.items()}
    return np.asarray(node)

  return visit(params, ()), layouts


def _from_storage(stored, layouts):
  def visit(node, path):
    name = "/".join(path)
    if name in layouts:
      static = dict(layouts[name])
      static["shape"] = tuple(static["shape"])
      return quantize.QuantizedArray(codes=node["codes"], scales=node["scales"],
                                     input_scales=node.get("input_scales"), **static)
    if isinstance(node, dict):
      return {k: visit(v, path + (k,)) for k, v in node.items()}
    return node

  return visit(stored, ())


def check_out(out: str) -> None:
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f"--out={out!r} exists and is not an empty folder")


def write_workdir(out: str, cfg: ml_collections.ConfigDict, params, report: dict,
                  tokenizer_file: str | None = None, step: int = 0) -> None:
  """Writes OUT (which must not exist or be empty) through OUT.partial; nothing is left on error."""
  out = os.path.abspath(out)
  check_out(out)
  staging = out.rstrip("/") + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    state_dir = os.path.join(staging, "checkpoints", str(step), "state")
    os.makedirs(os.path.dirname(state_dir))
    if tokenizer_file:
      shutil.copy(tokenizer_file, os.path.join(staging, "tokenizer.json"))
      with cfg.unlocked():
        cfg.data.tokenizer_path = os.path.join(out, "tokenizer.json")
    stored, layouts = _to_storage(params)
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(state_dir, {"step": np.int32(step), "params": stored})
    with open(os.path.join(staging, "checkpoints", str(step), LAYOUT_FILE), "w") as f:
      json.dump(layouts, f, indent=1)
    with open(os.path.join(staging, "config.json"), "w") as f:
      f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    with open(os.path.join(staging, REPORT_FILE), "w") as f:
      json.dump(report, f, indent=2)
    if os.path.exists(out):
      os.rmdir(out)
    os.rename(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def is_quantized(cfg) -> bool:
  section = cfg.get("quantization")
  return section is not None and section.get("weights", "none") != "none"


def load_params(workdir: str, step: int):
  """The params tree of a compressed workdir's checkpoint, QuantizedArrays rebuilt (NumPy)."""
  step_dir = os.path.join(os.path.abspath(workdir), "checkpoints", str(step))
  layout_path = os.path.join(step_dir, LAYOUT_FILE)
  if not os.path.isfile(layout_path):
    raise FileNotFoundError(f"{step_dir} has no {LAYOUT_FILE}: not a quantized checkpoint")
  with open(layout_path) as f:
    layouts = json.load(f)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(os.path.join(step_dir, "state")).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  stored = checkpointer.restore(os.path.join(step_dir, "state"),
                                args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return _from_storage(stored["params"], layouts)


def load_quantized_workdir(workdir: str, cfg, step: int, mesh=None):
  """(model, params, cfg, tokenizer) of a quantized workdir; with `mesh` the params are
  replicated over it (quantized kernels have no training layout)."""
  # pylint: disable=g-import-not-at-top
  from llm_jax import data
  from llm_jax import models
  # pylint: enable=g-import-not-at-top
  model = models.build_model(cfg.model)
  params = load_params(workdir, step)
  if mesh is None:
    params = jax.device_put(params)
  else:
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(params, replicated)
  return model, params, cfg, data.make_tokenizer(cfg.data)
