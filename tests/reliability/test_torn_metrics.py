"""metrics.jsonl: a torn last line (a kill mid-write) is dropped with a warning; NaN is null."""

import json
import logging
import math

import pytest

from llm_jax.training import metrics as metrics_lib


def _strict_rows(path):
  """Rows parsed as strict JSON (bare NaN/Infinity rejected)."""
  def reject(constant):
    raise ValueError(f"not JSON: {constant}")
  return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def _write(workdir, rows):
  writer = metrics_lib.MetricsWriter(str(workdir), start_step=0, total_steps=10, tokens_per_step=1,
                                     progress_bar=False, tensorboard=False)
  for step, loss in rows:
    writer.write_train(step, {"loss": loss})
  writer.close()


def test_torn_last_line_is_dropped_and_the_resume_appends_cleanly(tmp_path, caplog):
  _write(tmp_path, [(1, 2.0), (2, 1.5), (3, 1.25)])
  path = tmp_path / metrics_lib.METRICS_FILE
  with open(path, "a") as f:
    f.write('{"step": 46, "accuracy": 0.3')  # the torn line
  with caplog.at_level(logging.WARNING):
    assert [r["step"] for r in metrics_lib.read_rows(tmp_path)] == [1, 2, 3]
  assert any("torn" in r.getMessage() for r in caplog.records)
  metrics_lib.drop_rows_after(str(tmp_path), 2)  # what a resume from step 2 does
  _write(tmp_path, [(3, 1.0)])
  assert [(r["step"], r["loss"]) for r in _strict_rows(path)] == [(1, 2.0), (2, 1.5), (3, 1.0)]


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path):
  path = tmp_path / metrics_lib.METRICS_FILE
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
    metrics_lib.read_rows(tmp_path)


def test_non_finite_values_are_written_as_null_with_the_value_as_text(tmp_path):
  _write(tmp_path, [(1, math.nan), (2, math.inf)])
  rows = _strict_rows(tmp_path / metrics_lib.METRICS_FILE)
  assert rows[0]["loss"] is None and rows[0]["loss_str"] == "nan"
  assert rows[1]["loss"] is None and rows[1]["loss_str"] == "inf"
  assert metrics_lib.read_rows(tmp_path)[0]["loss"] is None
