"""The loop trains every task from files and writes the task's metrics at each evaluation."""

import json
import random

import pytest

from llm_jax import config as config_lib
from llm_jax.training import loop
from llm_jax.training import metrics as metrics_lib


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _rows(n, seed):
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    label = rng.choice(["up", "down"])
    word = rng.choice({"up": ["sky", "sun", "top"], "down": ["mud", "pit", "low"]}[label])
    rows.append({"text": f"the {word} and so on", "label": label, "input": word,
                 "target": word[::-1], "score": 1.0 if label == "up" else -1.0})
  return rows


def _config(preset, tmp_path, task, **task_fields):
  cfg = config_lib.base_config(preset)
  cfg.model.update(d_model=32, num_layers=1, num_heads=2, d_ff=64, dropout_rate=0.0)
  if cfg.model.get("head_dim") is not None:
    cfg.model.head_dim = 16
  if cfg.model.get("num_decoder_layers") is not None:
    cfg.model.num_decoder_layers = 1
  cfg.task.name = task
  cfg.task.update(task_fields)
  cfg.data.train_files = _jsonl(tmp_path / "train.jsonl", _rows(200, 0))
  cfg.data.eval_files = _jsonl(tmp_path / "validation.jsonl", _rows(24, 1))
  cfg.data.sequence_length = 32
  cfg.train.update(batch_size=8, steps=30, log_every=10, eval_every=30, eval_batches=3,
                   checkpoint_every=0, progress_bar=False, tensorboard=False, plot=False)
  cfg.optimizer.update(learning_rate=3e-3, warmup_steps=3)
  return cfg


def _last_eval(workdir):
  return [r for r in metrics_lib.read_rows(workdir) if "eval_loss" in r][-1]


def test_cloze_reports_verbalizer_accuracy(tmp_path):
  cfg = _config("gpt_tiny", tmp_path, "cloze", labels=("up", "down"),
                verbalizers=(" up", " down"), cloze_template="{text} =>",
                eval_generate_examples=16)
  loop.train(cfg, str(tmp_path / "run"))
  row = _last_eval(str(tmp_path / "run"))
  assert 0.0 <= row["eval_cloze_accuracy"] <= 1.0 and "eval_cloze_macro_f1" in row


def test_regression_reports_correlations(tmp_path):
  cfg = _config("bert_tiny", tmp_path, "regression", label_field="score")
  cfg.model.update(num_labels=1, mlm_head=False, nsp_head=False, pooler=True)
  loop.train(cfg, str(tmp_path / "run"))
  row = _last_eval(str(tmp_path / "run"))
  assert {"eval_pearson", "eval_spearman", "eval_mse"} <= set(row)
  assert row["eval_pearson"] > 0.5  # the sign is told by one word


@pytest.mark.parametrize("preset", ["t5_tiny", "prefix_lm_tiny"])
def test_seq2seq_reports_generation_metrics(tmp_path, preset):
  if preset == "prefix_lm_tiny":
    cfg = _config("gpt_tiny", tmp_path, "seq2seq", eval_generate_examples=8,
                  eval_max_new_tokens=6)
    cfg.model.attention = "prefix"
  else:
    cfg = _config(preset, tmp_path, "seq2seq", eval_generate_examples=8, eval_max_new_tokens=6)
    cfg.data.target_length = 8
  loop.train(cfg, str(tmp_path / "run"))
  row = _last_eval(str(tmp_path / "run"))
  assert {"eval_exact_match", "eval_bleu", "eval_rouge1", "eval_rougeL"} <= set(row)
