"""experiments/benchmark_finetune.py --quick: every variant runs and the table, JSON and plot
are written with the ratios the targets are stated in."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.hf
def test_quick_run_writes_the_table_json_and_plot(tmp_path):
  env = {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
  result = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_finetune.py"), "--quick",
       "--steps=2", "--rounds=1", "--seq=32", f"--out={tmp_path}"],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark_finetune_quick.json").read_text())
  rows = {r["variant"]: r for r in report["rows"]}
  assert set(rows) == {"full", "lora", "qlora", "peft_lora"}
  assert rows["lora"]["trainable"] == rows["qlora"]["trainable"] < rows["full"]["trainable"]
  assert rows["full"]["trainable"] == rows["full"]["total"]
  assert set(report["ratios"]) == {"lora_step_time_vs_full", "lora_peak_rss_vs_full",
                                   "lora_xla_memory_vs_full", "lora_tokens_per_s_vs_peft"}
  assert "| lora |" in (tmp_path / "benchmark_finetune_quick.md").read_text()
  assert (tmp_path / "benchmark_finetune_quick.png").stat().st_size > 0
