"""experiments/compression_report.py --quick: one table over every method and the KD curve."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # about 2.5 CPU-minutes: the decoder, 9 methods, two students
def test_quick_report_has_every_method_and_both_distillation_curves(tmp_path):
  out = tmp_path / "report"
  env = {**os.environ, "PYTHONPATH": REPO}
  subprocess.run([sys.executable, os.path.join(REPO, "experiments", "compression_report.py"),
                  "--quick", f"--out={out}"], check=True, env=env, cwd=REPO, timeout=900)
  report = json.load(open(out / "report.json"))
  methods = [r["method"] for r in report["methods"]]
  assert methods[0] == "float32" and {"int8", "int4 gptq g32", "int4 awq g32"} <= set(methods)
  by_name = {r["method"]: r for r in report["methods"]}
  assert by_name["int8"]["bytes"] < by_name["float32"]["bytes"]
  assert by_name["int4 rtn g32"]["bytes"] < by_name["int8"]["bytes"]
  assert by_name["prune neurons 50%"]["bytes"] < by_name["float32"]["bytes"]
  assert all(r["perplexity"] > 1 and r["tokens_per_s_b1"] > 0 for r in report["methods"])
  assert set(report["distillation"]["curves"]) == {"KD", "no KD"}
  assert all(report["distillation"]["curves"].values())
  assert (out / "compression.png").stat().st_size > 0 and (out / "distillation.png").exists()
  assert "| int8 |" in (out / "report.md").read_text()
