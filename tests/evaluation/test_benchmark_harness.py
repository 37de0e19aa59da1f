"""experiments/benchmark_harness.py --quick: both comparisons run side by side and are written."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments import benchmark_harness  # pylint: disable=wrong-import-position

pytestmark = [pytest.mark.hf, pytest.mark.slow]


def test_quick_benchmark_writes_both_ratios(tmp_path):
  results = benchmark_harness.main(["--quick", f"--out={tmp_path}"])
  written = json.loads((tmp_path / "benchmark_harness.json").read_text())
  assert written == results and results["items"] == 24 and results["sentences"] == 64
  assert results["harness_ratio"] == pytest.approx(
      results["ours_items_per_s"] / results["lm_eval_items_per_s"])
  assert results["embedding_max_abs_diff"] <= 1e-5  # the same model on both sides
  assert "| harness items/s" in (tmp_path / "benchmark_harness.md").read_text()
  assert (tmp_path / "benchmark_harness.png").read_bytes()[:4] == b"\x89PNG"
