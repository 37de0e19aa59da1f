"""Executes colab/quickstart.ipynb on CPU with a short run, as a user would on Colab."""

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
