"""Calibration inputs of dense layers: what GPTQ and AWQ see of the data.

The model runs eagerly on a few batches (from the data pipeline or token rows) with its dense
layers intercepted; each layer's input is kept as a [tokens, C] matrix (C its contracted size)
of the real (segment id != 0) tokens. The model must be unrolled (scan_layers=False) so that
every layer has its own path.
"""

import math

import flax.linen as nn
import jax
import numpy as np

from llm_jax.models import layers
from llm_jax.models import lora


def dense_inputs(model, params, batches, max_tokens: int = 4096) -> dict[str, np.ndarray]:
  """{layer path: inputs [N, C] float32} over `batches` (dicts with 'inputs' and optionally
  'input_segment_ids'), at most `max_tokens` rows per layer."""
  if model.cfg.get("scan_layers"):
    raise ValueError("calibration needs an unrolled model: set model.scan_layers=False")
  collected: dict[str, list[np.ndarray]] = {}
  mask = {"rows": None}

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, layers.DenseGeneral) and context.method_name == "__call__":
      x = np.asarray(args[0], np.float32)
      axis = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
      n_in = len(axis)
      x_NxC = x.reshape(-1, math.prod(x.shape[x.ndim - n_in:]))
      if mask["rows"] is not None and x_NxC.shape[0] == mask["rows"].size:
        x_NxC = x_NxC[mask["rows"]]
      collected.setdefault(lora.layer_path(module), []).append(x_NxC)
    return next_fun(*args, **kwargs)

  for batch in batches:
    inputs = np.asarray(batch["inputs"])
    segments = batch.get("input_segment_ids")
    mask["rows"] = None if segments is None else np.asarray(segments).reshape(-1) != 0
    kwargs = {} if segments is None else {"input_segment_ids": np.asarray(segments)}
    if "input_positions" in batch:
      kwargs["input_positions"] = np.asarray(batch["input_positions"])
    with nn.intercept_methods(interceptor):
      model.apply({"params": params}, inputs, deterministic=True, **kwargs)
    if all(sum(len(a) for a in v) >= max_tokens for v in collected.values()):
      break
  return {k: np.concatenate(v)[:max_tokens] for k, v in collected.items()}


def pipeline_batches(cfg, num_batches: int, split: str = "train"):
  """The first `num_batches` batches of the run's data pipeline."""
  from llm_jax import data  # pylint: disable=g-import-not-at-top
  iterator = data.make_pipeline(cfg, split=split)
  out = []
  for _ in range(num_batches):
    batch = next(iterator, None)
    if batch is None:
      break
    out.append(batch)
  if not out:
    raise ValueError(f"data split {split!r} gave no calibration batch")
  return out


def text_batches(tokenizer, lines, length: int, batch_size: int = 8):
  """Batches of token windows of `length` cut from the concatenated `lines`."""
  ids = [t for line in lines for t in tokenizer.encode(line)]
  rows = [ids[i:i + length] for i in range(0, len(ids) - length + 1, length)]
  if not rows:
    raise ValueError(f"calibration text has fewer than {length} tokens")
  return [{"inputs": np.asarray(rows[i:i + batch_size], np.int32)}
          for i in range(0, len(rows), batch_size)]
