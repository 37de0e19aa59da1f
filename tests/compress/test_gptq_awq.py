"""GPTQ and AWQ against round-to-nearest on the same layer and inputs, and from a workdir."""

import pytest
import json
import os

import numpy as np

from llm_jax.compress import awq
from llm_jax.compress import gptq
from llm_jax.compress import ptq
from llm_jax.compress import __main__ as compress_cli
from llm_jax.evaluation import load
from llm_jax.peft import quantize


def _layer(seed=0, n=512, c=64, f=32):
  rng = np.random.default_rng(seed)
  mixing_CxC = rng.normal(size=(c, c)) * np.linspace(0.05, 2.0, c)  # correlated, uneven inputs
  x_NxC = (rng.normal(size=(n, c)) @ mixing_CxC).astype(np.float32)
  w_CxF = rng.normal(size=(c, f)).astype(np.float32)
  return x_NxC, w_CxF


def _output_error(x, w, q):
  w_hat = np.asarray(quantize.dequantize(q))
  return float(np.mean(np.square(x @ w - x @ w_hat)))


def test_gptq_reconstruction_error_is_below_round_to_nearest():
  x, w = _layer()
  layer = "decoder/layers_0/mlp/wi"
  for group in (0, 16):
    q_gptq = gptq.quantizer({layer: x})(w, layer, "int4", group)
    q_rtn = ptq.rtn(w, layer, "int4", group)
    assert _output_error(x, w, q_gptq) < 0.9 * _output_error(x, w, q_rtn)
    assert q_gptq.codes.shape == q_rtn.codes.shape and q_gptq.scales.shape == q_rtn.scales.shape


def test_gptq_codes_lie_on_the_stored_grid():
  x, w = _layer(1, c=32, f=8)
  w_hat, scales_FxG = gptq.gptq_matrix(w, gptq.hessian(x), "int4", 8)
  steps = w_hat.T / np.repeat(scales_FxG, 8, axis=1) * 7
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
  assert np.max(np.abs(steps)) <= 7 + 1e-6


def test_awq_is_never_worse_than_round_to_nearest_and_stores_input_scales():
  x, w = _layer(2)
  layer = "decoder/layers_0/mlp/wi"
  q, error, rtn_error = awq.search(w, layer, x, "int4", 16)
  assert error <= rtn_error
  assert np.isclose(_output_error(x, w, q), error, rtol=1e-4)
  assert q.input_scales is None or q.input_scales.shape == (64,)


@pytest.mark.slow  # a training run; the loss and its gradient are tested above
def test_gptq_from_a_workdir_with_pipeline_calibration(tiny_workdir, tmp_path):
  workdir, _, _ = tiny_workdir
  out = str(tmp_path / "gptq")
  compress_cli.FLAGS.unparse_flags()
  compress_cli.FLAGS(["compress", f"--workdir={workdir}", "--method=gptq", "--group_size=16",
                      "--calibration_batches=1", f"--out={out}"])
  try:
    assert compress_cli.main(["compress"]) == 0
  finally:
    compress_cli.FLAGS.unparse_flags()
  report = json.load(open(os.path.join(out, "compression.json")))
  assert report["bytes_after"] < 0.6 * report["bytes_before"]  # embeddings stay float
  model, params, cfg, _ = load.load_from_workdir(out)
  assert (cfg.quantization.method, cfg.quantization.weights) == ("gptq", "int4")
  logits = model.apply({"params": params}, np.ones((1, 8), np.int32))["logits"]
  assert np.all(np.isfinite(np.asarray(logits)))
