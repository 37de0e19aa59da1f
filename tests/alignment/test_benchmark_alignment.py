"""experiments/benchmark_alignment.py --quick: our rollout sampler against HF generate."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.hf
def test_quick_rollout_benchmark_writes_its_table(tmp_path):
  result = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_alignment.py"), "--part=rollout",
       "--quick", f"--out={tmp_path}"],
      cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads((tmp_path / "benchmark_alignment_rollout.json").read_text())["results"]
  assert len(rows) == 1
  row = rows[0]
  assert row["rows"] == row["prompts"] * row["generations"]
  assert row["ours_tokens_per_sec"] > 0 and row["hf_generate_tokens_per_sec"] > 0
  assert row["ratio"] == pytest.approx(row["ours_tokens_per_sec"] / row["hf_generate_tokens_per_sec"])
  assert "| ratio |" in (tmp_path / "benchmark_alignment_rollout.md").read_text()
  assert (tmp_path / "benchmark_alignment_rollout.png").stat().st_size > 0
