"""Executes colab/quickstart.ipynb on CPU with a short run, as a user would on Colab."""

import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_notebook_trains_plots_and_generates(tmp_path, monkeypatch):
  monkeypatch.setenv("LLM_JAX_REPO", str(REPO))
  monkeypatch.setenv("QUICKSTART_STEPS", "40")
  monkeypatch.setenv("QUICKSTART_WORKDIR", str(tmp_path / "workdir"))
  monkeypatch.setenv("LLM_JAX_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("XLA_FLAGS", "")
  notebook = nbformat.read(REPO / "colab" / "quickstart.ipynb", as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO / "colab")}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "final eval loss" in text
  assert "continuation: 'def main(" in text
  assert any("image/png" in o.get("data", {}) for o in outputs), "the loss plot was not drawn"
  assert (tmp_path / "workdir" / "metrics.jsonl").exists()


def test_finetune_notebook_compares_lora_with_full_fine_tuning(tmp_path, monkeypatch):
  monkeypatch.setenv("LLM_JAX_REPO", str(REPO))
  monkeypatch.setenv("FINETUNE_WORKDIR", str(tmp_path / "workdir"))
  monkeypatch.setenv("FINETUNE_PRETRAIN_STEPS", "30")
  monkeypatch.setenv("FINETUNE_STEPS", "12")
  monkeypatch.setenv("LLM_JAX_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv("HF_FOLDER", raising=False)
  notebook = nbformat.read(REPO / "colab" / "finetune.ipynb", as_version=4)
  NotebookClient(notebook, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO / "colab")}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "full: eval accuracy" in text and "lora: eval accuracy" in text
  rows = {line.split()[0]: line.split() for line in text.splitlines()
          if line.startswith(("full ", "lora "))}
  full_trainable = int(rows["full"][3].replace(",", ""))
  lora_trainable = int(rows["lora"][3].replace(",", ""))
  assert lora_trainable < full_trainable / 5
  assert any("image/png" in o.get("data", {}) for o in outputs), "the plots were not drawn"
  assert (tmp_path / "workdir" / "hf_bert_tiny" / "model.safetensors").exists()


def test_alignment_notebook_runs_sft_reward_model_dpo_and_grpo(tmp_path, monkeypatch):
  monkeypatch.setenv("LLM_JAX_REPO", str(REPO))
  monkeypatch.setenv("ALIGNMENT_WORKDIR", str(tmp_path / "workdir"))
  monkeypatch.setenv("ALIGNMENT_SFT_STEPS", "60")
  monkeypatch.setenv("ALIGNMENT_RM_STEPS", "8")
  monkeypatch.setenv("ALIGNMENT_DPO_STEPS", "8")
  monkeypatch.setenv("ALIGNMENT_GRPO_STEPS", "2")
  monkeypatch.setenv("LLM_JAX_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("XLA_FLAGS", "")
  notebook = nbformat.read(REPO / "colab" / "alignment.ipynb", as_version=4)
  NotebookClient(notebook, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO / "colab")}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  for line in ("sft: held-out exact match", "reward model: eval preference accuracy 2:",
               "dpo: eval preference accuracy 2:", "grpo: held-out exact match"):
    assert line in text, text[-3000:]
  final = json.loads(text.strip().splitlines()[-1])
  assert set(final) == {"sft", "dpo", "grpo"} and all(0.0 <= v <= 1.0 for v in final.values())
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 2, "the preference and GRPO plots were not drawn"
  for name in ("sft", "reward_model", "dpo", "grpo"):
    assert (tmp_path / "workdir" / name / "metrics.jsonl").exists()
