"""`python -m llm_jax.compress`: quantized workdirs that load, decode and evaluate; bad input."""

import io
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from llm_jax import generate
from llm_jax.compress import __main__ as compress_cli
from llm_jax.evaluation import load
from llm_jax.peft import quantize

TOKENS = np.arange(1, 25, dtype=np.int32).reshape(2, 12)


def _run(*args):
  compress_cli.FLAGS.unparse_flags()
  compress_cli.FLAGS(["compress", *args])
  try:
    return compress_cli.main(["compress"])
  finally:
    compress_cli.FLAGS.unparse_flags()


def _logits(model, params):
  return np.asarray(model.apply({"params": params}, TOKENS)["logits"])


def test_int8_workdir_stores_packed_integers_and_decodes(tiny_workdir, tmp_path):
  workdir, _, float_params = tiny_workdir
  out = str(tmp_path / "int8")
  assert _run(f"--workdir={workdir}", "--method=int8", f"--out={out}") == 0
  report = json.load(open(os.path.join(out, "compression.json")))
  assert report["bytes_after"] < report["bytes_before"]
  meta = ocp.PyTreeCheckpointer().metadata(
      os.path.join(out, "checkpoints", "0", "state")).item_metadata.tree
  stored_wi = meta["params"]["decoder"]["layers_0"]["mlp"]["wi"]["kernel"]
  assert str(stored_wi["codes"].dtype) == "int8"
  model, params, cfg, tokenizer = load.load_from_workdir(out)
  assert cfg.quantization.weights == "int8"
  assert isinstance(params["decoder"]["layers_0"]["mlp"]["wi"]["kernel"], quantize.QuantizedArray)
  float_model, *_ = load.load_from_workdir(workdir)
  want, got = _logits(float_model, float_params), _logits(model, params)
  assert np.max(np.abs(got - want)) < 0.02 * np.max(np.abs(want))
  text = generate.run(model, params, tokenizer, "def ", max_new_tokens=4, out=io.StringIO())
  assert isinstance(text, str)


def test_gptq_group_size_that_does_not_divide_leaves_nothing(tiny_workdir, tmp_path, capsys):
  workdir, _, _ = tiny_workdir
  out = tmp_path / "bad"
  assert _run(f"--workdir={workdir}", "--method=int4", "--group_size=24", f"--out={out}") == 2
  assert "group size 24 does not divide" in capsys.readouterr().err
  assert not out.exists() and not (tmp_path / "bad.partial").exists()


def test_an_existing_output_is_refused(tiny_workdir, tmp_path, capsys):
  workdir, _, _ = tiny_workdir
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "keep.txt").write_text("x")
  assert _run(f"--workdir={workdir}", "--method=int8", f"--out={tmp_path / 'full'}") == 2
  assert "not an empty folder" in capsys.readouterr().err
  assert (tmp_path / "full" / "keep.txt").read_text() == "x"
