"""The done-when runs: `python -m llm_jax.train` fine-tunes Hugging Face folders."""

import json
import os
import subprocess
import sys

import numpy as np
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


@pytest.mark.hf
def test_a_converted_hf_llama_instruction_tunes_with_lora_and_exports_merged(
    tmp_path, hf_llama_folder, sft_files):
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from llm_jax import convert  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  from llm_jax.training import partition  # pylint: disable=g-import-not-at-top
  train_files, eval_files = sft_files
  workdir = tmp_path / "sft"
  log, rows = _train(
      "sft_llama_lora.py", workdir, f"--config.train.init_from=hf:{hf_llama_folder}",
      "--config.data.tokenizer=hf", f"--config.data.train_files={train_files}",
      f"--config.data.eval_files={eval_files}", "--config.data.sequence_length=32",
      "--config.train.steps=60", "--config.train.eval_every=60", "--config.train.eval_batches=2",
      "--config.optimizer.warmup_steps=5",
      "--config.task.eval_generate_examples=8", "--config.task.eval_max_new_tokens=4",
      "--config.model.peft.lora_dropout=0.0", "--config.optimizer.learning_rate=5e-3",
      "--config.train.log_every=10")
  trainable, total = (int(n.replace(",", "")) for n in
                      log.split("parameters: ")[1].split(" (")[0].split(" trainable of "))
  assert 0 < trainable < 0.2 * total
  evals = [r for r in rows if "eval_loss" in r]
  assert {"eval_exact_match", "eval_bleu", "eval_rougeL"} <= set(evals[-1])
  train = [r["loss"] for r in rows if "loss" in r]
  assert train[-1] < 0.7 * train[0]

  # The frozen base is still exactly the Hugging Face weights.
  _, hf_params, _ = convert.from_hf(hf_llama_folder)
  _, tuned, _, _ = load.load_from_workdir(str(workdir))
  tuned = partition.flat(jax.device_get(tuned))
  for name, value in partition.flat(hf_params).items():
    np.testing.assert_array_equal(tuned[name], value, err_msg=name)
  assert any(n.endswith("lora_b") and np.abs(v).max() > 0 for n, v in tuned.items())

  # Exported with the adapters merged: transformers reproduces the tuned model.
  out = tmp_path / "exported"
  result = subprocess.run([sys.executable, "-m", "llm_jax.convert", "to_hf",
                           f"--workdir={workdir}", f"--out={out}"], capture_output=True,
                          text=True, env=subprocess_env(1), timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  model, params, _, _ = load.load_from_workdir(str(workdir))
  tokens = np.random.default_rng(0).integers(1, 300, (2, 10)).astype(np.int32)
  ours = np.asarray(model.apply({"params": params}, tokens)["logits"])
  hf = transformers.LlamaForCausalLM.from_pretrained(out).eval()
  with torch.no_grad():
    theirs = hf(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
  assert np.max(np.abs(ours[..., :theirs.shape[-1]] - theirs)) < 1e-4
