"""One post-training compression method applied to a loaded model: new params, config, report."""

import ml_collections
import numpy as np

from llm_jax.compress import calibration
from llm_jax.compress import ptq


def _count(params) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _calibration_inputs(cfg, model, params, tokenizer, batches: int, calibration_file):
  if calibration_file:
    with open(calibration_file) as f:
      lines = [line for line in f.read().splitlines() if line.strip()]
    length = min(int(cfg.model.max_len), int(cfg.data.get("sequence_length") or 128))
    rows = calibration.text_batches(tokenizer, lines, length)[:batches]
  else:
    if cfg.data.get("source") is None or cfg.get("train") is None:
      raise ValueError("GPTQ / AWQ of a Hugging Face folder need --calibration_file")
    rows = calibration.pipeline_batches(cfg, batches)
  return calibration.dense_inputs(model, params, rows)


def quantize(cfg, model, params, tokenizer, *, kind: str, method: str, group_size: int,
             targets: str, calibration_batches: int, calibration_file=None):
  """(quantized params, config recording the quantization)."""
  ptq.check_kind(kind, group_size)
  quantizer = None
  if method in ("gptq", "awq"):
    inputs = _calibration_inputs(cfg, model, params, tokenizer, calibration_batches,
                                 calibration_file)
    if method == "gptq":
      from llm_jax.compress import gptq  # pylint: disable=g-import-not-at-top
      quantizer = gptq.quantizer(inputs)
    else:
      from llm_jax.compress import awq  # pylint: disable=g-import-not-at-top
      quantizer = awq.quantizer(inputs)
  quantized = ptq.quantize_params(params, kind, group_size, targets, quantizer, progress=True)
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.quantization.update(weights=kind, method=method, group_size=group_size, targets=targets)
  return quantized, cfg


def run(cfg, model, params, tokenizer, *, method: str, bits: int = 4, group_size: int = 0,
        targets: str = ".", calibration_batches: int = 4, calibration_file=None,
        sparsity: float = 0.5, pattern: str = "unstructured", scope: str = "layer",
        rank: int = 0, energy: float = 0.0):
  """(new params, new config, report) of `method` (see llm_jax.compress.__main__)."""
  report = {"method": method, "bytes_before": ptq.tree_bytes(params),
            "parameters_before": _count(params)}
  if method in ("int8", "int4"):
    new_params, new_cfg = quantize(cfg, model, params, tokenizer, kind=method, method="rtn",
                                   group_size=group_size, targets=targets,
                                   calibration_batches=0)
  elif method in ("gptq", "awq"):
    new_params, new_cfg = quantize(cfg, model, params, tokenizer, kind=f"int{bits}",
                                   method=method, group_size=group_size, targets=targets,
                                   calibration_batches=calibration_batches,
                                   calibration_file=calibration_file)
  elif method == "prune":
    from llm_jax.compress import pruning  # pylint: disable=g-import-not-at-top
    new_params, new_cfg = pruning.prune_model(cfg, params, sparsity=sparsity, pattern=pattern,
                                              scope=scope, targets=targets)
  elif method == "lowrank":
    from llm_jax.compress import lowrank  # pylint: disable=g-import-not-at-top
    new_params, new_cfg, factor_count = lowrank.factorise_model(cfg, params, rank=rank,
                                                                energy=energy, targets=targets)
    report["factorised_parameters"] = factor_count
  else:
    raise ValueError(f"--method={method!r}: expected int8, int4, gptq, awq, prune or lowrank")
  report.update(bytes_after=ptq.tree_bytes(new_params), parameters_after=_count(new_params))
  report["bytes_ratio"] = report["bytes_after"] / max(report["bytes_before"], 1)
  return new_params, new_cfg, report
