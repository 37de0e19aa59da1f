"""Loading a training workdir, and the evaluate CLI in its three modes and on bad input."""

import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import evaluate
from llm_jax import models
from llm_jax.evaluation import load
from llm_jax.evaluation import scoring
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import train_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEP = 3


def _tiny_gpt_config(data_dir):
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(dict(d_model=32, num_layers=2, num_heads=2, d_ff=64, max_len=32))
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=32, data_dir=data_dir))
  cfg.objective.name = "clm"
  cfg.train.batch_size = 8
  return config_lib.finalize(cfg)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir as the training loop writes it: config.json and a TrainState checkpoint."""
  root = tmp_path_factory.mktemp("evaluate")
  cfg = _tiny_gpt_config(str(root / "data"))
  path = root / "run"
  path.mkdir()
  (path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  model = models.build_model(cfg.model)
  init_batch = train_step.init_batch(cfg, 1)
  params = nn.unbox(model.init(jax.random.key(3), **init_batch)["params"])
  state = train_step.TrainState(step=np.int32(STEP), params=params,
                                opt_state=optax.adam(1e-3).init(params))
  checkpointer = checkpoint_lib.Checkpointer(str(path), save_every=1, keep=2, async_save=False)
  checkpointer.save(STEP, state, data.make_pipeline(cfg, split="train"), force=True)
  checkpointer.close()
  return str(path), params


def _run_cli(*args):
  """Runs the CLI's main in this process; returns its exit code."""
  evaluate.FLAGS.unparse_flags()
  evaluate.FLAGS(["evaluate", *args])
  try:
    return evaluate.main(["evaluate"])
  finally:
    evaluate.FLAGS.unparse_flags()


def test_load_from_workdir_restores_the_saved_params(workdir):
  path, saved = workdir
  model, params, cfg, tokenizer = load.load_from_workdir(path)
  assert cfg.model.d_model == 32 and cfg.model.family == "decoder"
  assert tokenizer.decode(tokenizer.encode("héllo")) == "héllo"
  assert jax.tree.structure(params) == jax.tree.structure(saved)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert model.apply({"params": params}, np.ones((1, 4), np.int32))["logits"].shape == (1, 4, cfg.model.vocab_size)


def test_load_from_workdir_accepts_a_relative_path(workdir, monkeypatch):
  path, saved = workdir
  parent, name = os.path.split(path)
  monkeypatch.chdir(parent)
  _, params, _, _ = load.load_from_workdir(name)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_load_errors_name_the_directory(tmp_path, workdir):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load.load_from_workdir(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    load.load_from_workdir(str(tmp_path))
  (tmp_path / "config.json").write_text(open(os.path.join(workdir[0], "config.json")).read())
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    load.load_from_workdir(str(tmp_path))
  with pytest.raises(ValueError, match=r"no checkpoint at step 7; steps: \[3\]"):
    load.load_from_workdir(workdir[0], step=7)
  with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
    load.load_from_hf(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="folder .*nowhere.* does not exist"):
    load.load_from_hf(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    load.load_from_hf(str(tmp_path / "empty"))


def test_a_checkpoint_that_does_not_fit_the_config_names_the_parameter(tmp_path, workdir):
  copy = tmp_path / "run"
  shutil.copytree(workdir[0], copy)
  cfg = json.loads((copy / "config.json").read_text())
  cfg["model"]["d_ff"] = 48
  (copy / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"parameter decoder/layers_0/mlp/.* has "
                     r"shape \(64,\), the model expects \(48,\)"):
    load.load_from_workdir(str(copy))


def test_cli_scores_each_line_of_a_texts_file(tmp_path, workdir):
  path, params = workdir
  texts = ["def f(x):", "import os\nimport sys"[:9]]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
  output = tmp_path / "scores.jsonl"
  assert _run_cli(f"--workdir={path}", f"--texts_file={tmp_path / 'texts.txt'}",
                  f"--output={output}") == 0
  rows = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r["text"] for r in rows] == texts
  cfg = load.load_config(path)
  model, tokenizer = models.build_model(cfg.model), data.make_tokenizer(cfg.data)
  for text, row in zip(texts, rows):
    # The byte tokenizer's bos is put first, so every byte of the text is scored.
    tokens = [tokenizer.specials.bos_id] + list(tokenizer.encode(text))
    logits = np.asarray(model.apply({"params": params}, np.array([tokens[:-1]]))["logits"][0],
                        np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = log_probs[np.arange(len(tokens) - 1), tokens[1:]].sum()
    assert row["tokens"] == len(text.encode())
    assert row["log_likelihood"] == pytest.approx(expected, rel=1e-5)
    assert row["perplexity"] == pytest.approx(np.exp(-expected / row["tokens"]), rel=1e-5)


def test_cli_dataset_metrics_match_a_direct_evaluation(tmp_path, workdir):
  path, params = workdir
  output = tmp_path / "metrics.json"
  assert _run_cli(f"--workdir={path}", "--max_batches=2", f"--output={output}") == 0
  metrics = json.loads(output.read_text())
  assert metrics["step"] == STEP and metrics["batches"] == 2
  cfg = load.load_config(path)
  batches = data.make_pipeline(cfg, split="validation")
  direct = scoring.metrics_from_batches(models.build_model(cfg.model), params, batches,
                                        max_batches=2)
  assert metrics["tokens"] == direct["tokens"] > 0
  assert metrics["loss"] == pytest.approx(direct["loss"], rel=1e-5)
  assert metrics["perplexity"] == pytest.approx(np.exp(direct["loss"]), rel=1e-5)
  assert metrics["accuracy"] == pytest.approx(direct["accuracy"], abs=1e-6)


def test_cli_bleu_and_rouge_of_prediction_files(tmp_path):
  (tmp_path / "pred.txt").write_text("the cat sat on the mat\nhello there\n")
  (tmp_path / "ref.txt").write_text("the cat sat on the mat\nhello there\n")
  output = tmp_path / "text.json"
  assert _run_cli(f"--predictions={tmp_path / 'pred.txt'}", f"--references={tmp_path / 'ref.txt'}",
                  f"--output={output}") == 0
  scores = json.loads(output.read_text())
  assert scores["bleu"] == pytest.approx(100.0)
  assert scores["rougeL"] == pytest.approx(1.0)
  assert scores["examples"] == 2


def test_cli_reports_bad_input(tmp_path, capsys, workdir):
  assert _run_cli(f"--workdir={tmp_path / 'missing'}") == 2
  assert "does not exist" in capsys.readouterr().err
  (tmp_path / "one.txt").write_text("a\n")
  (tmp_path / "two.txt").write_text("a\nb\n")
  assert _run_cli(f"--predictions={tmp_path / 'one.txt'}",
                  f"--references={tmp_path / 'two.txt'}") == 2
  assert "--predictions has 1 lines but --references has 2" in capsys.readouterr().err
  assert _run_cli(f"--workdir={workdir[0]}", f"--hf={tmp_path}") == 2
  assert "exactly one of --workdir or --hf" in capsys.readouterr().err


def test_cli_process_exits_with_a_clear_message_for_a_workdir_without_checkpoint(tmp_path, workdir):
  (tmp_path / "config.json").write_text(open(os.path.join(workdir[0], "config.json")).read())
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "llm_jax.evaluate", f"--workdir={tmp_path}"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
  assert result.returncode == 2
  assert f"workdir {str(tmp_path)!r} has no checkpoint" in result.stderr
