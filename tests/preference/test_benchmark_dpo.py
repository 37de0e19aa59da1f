"""experiments/benchmark_dpo.py --quick: every variant runs, the DPO losses of ours and trl's
start at the same place, and the table, JSON and plot are written with the stated ratios."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.hf
def test_quick_run_writes_the_table_json_and_plot(tmp_path):
  env = {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
         "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
  result = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_dpo.py"), "--quick", "--steps=2",
       "--rounds=1", f"--out={tmp_path}"],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark_dpo_quick.json").read_text())
  rows = {r["variant"]: r for r in report["rows"]}
  assert set(rows) == {"in_step", "precomputed", "trl", "trl_precomputed"}
  assert rows["in_step"]["loss"] == pytest.approx(rows["precomputed"]["loss"], rel=1e-5)
  for row in rows.values():  # a few steps from log 2 at lr 1e-4
    assert abs(row["loss"] - math.log(2)) < 0.05
  assert set(report["ratios"]) == {"in_step_speedup_vs_trl",
                                   "precomputed_speedup_vs_trl_precomputed",
                                   "precomputed_xla_memory_vs_in_step",
                                   "precomputed_step_time_vs_in_step"}
  assert "| in_step |" in (tmp_path / "benchmark_dpo_quick.md").read_text()
  assert (tmp_path / "benchmark_dpo_quick.png").stat().st_size > 0
