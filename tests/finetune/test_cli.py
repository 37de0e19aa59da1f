"""The done-when runs: `python -m llm_jax.train` fine-tunes Hugging Face folders."""

import json
import os
import subprocess
import sys

import pytest

from tests.training.conftest import REPO, subprocess_env

QUIET = ["--config.train.progress_bar=False", "--config.train.tensorboard=False",
         "--config.train.plot=False"]


def _train(config, workdir, *overrides):
  command = [sys.executable, "-m", "llm_jax.train", f"--config={REPO / 'configs' / config}",
             f"--workdir={workdir}", *QUIET, *overrides]
  result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(1),
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return result.stderr, rows


@pytest.mark.hf
def test_a_converted_hf_bert_fine_tunes_on_classification(tmp_path, hf_bert_folder,
                                                          sentiment_files):
  train_files, eval_files = sentiment_files
  log, rows = _train(
      "finetune_bert_classification.py", tmp_path / "run",
      f"--config.train.init_from=hf:{hf_bert_folder}", "--config.data.tokenizer=hf",
      f"--config.data.train_files={train_files}", f"--config.data.eval_files={eval_files}",
      "--config.task.labels=('neg', 'pos')", "--config.model.num_labels=2",
      "--config.data.sequence_length=16", "--config.train.steps=60",
      "--config.train.eval_every=60", "--config.train.eval_batches=4",
      "--config.optimizer.learning_rate=3e-3", "--config.model.dropout_rate=0.0")
  assert "new: classifier/kernel (32, 2)" in log and "new: pooler/kernel (32, 32)" in log
  assert "parameters: " in log and "trainable of" in log
  evals = [r for r in rows if "eval_loss" in r]
  assert evals and {"eval_accuracy", "eval_macro_f1"} <= set(evals[-1])
  assert evals[-1]["eval_accuracy"] >= 0.9, evals[-1]
  train = [r["loss"] for r in rows if "loss" in r]
  assert train[-1] < train[0]
