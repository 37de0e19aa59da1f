"""experiments/attention_scaling.py --quick writes its table, JSON and plot."""

import importlib.util
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("attention_scaling",
                                               REPO / "experiments" / "attention_scaling.py")
attention_scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attention_scaling)


def test_quick_run_writes_table_json_and_plot(tmp_path):
  attention_scaling.main(["--quick", f"--out_dir={tmp_path}"])
  result = json.loads((tmp_path / "attention_scaling.json").read_text())
  kinds = {r["kind"] for r in result["rows"]}
  assert kinds == {"xla", "dot_product_attention", "sliding", "block_sparse", "linear"}
  assert all(r["seconds"] > 0 for r in result["rows"])
  assert {r["length"] for r in result["rows"]} == {32, 64}
  table = (tmp_path / "attention_scaling.md").read_text().splitlines()
  assert table[0].startswith("| length |") and len(table) >= 4
  assert (tmp_path / "attention_scaling.png").stat().st_size > 1000


def test_crossover_is_where_linear_stays_faster():
  rows = [{"kind": k, "length": n, "seconds": s} for k, n, s in [
      ("xla", 1, 1.0), ("linear", 1, 2.0), ("xla", 2, 2.0), ("linear", 2, 1.0),
      ("xla", 4, 3.0), ("linear", 4, 4.0), ("xla", 8, 9.0), ("linear", 8, 5.0),
      ("xla", 16, 30.0), ("linear", 16, 9.0)]]
  assert attention_scaling.crossover(rows) == 8
