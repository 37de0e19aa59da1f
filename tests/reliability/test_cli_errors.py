"""User errors: a short message (exit 2) before anything is created; SIGTERM at startup is clean."""

import os
import signal
import subprocess
import sys
import time

import pytest

from llm_jax.training import loop
from llm_jax.training import workdir as workdir_lib
from tests.training.conftest import REPO


def _stderr_lines(result):
  return [line for line in result.stderr.splitlines() if line.strip()]


def test_unknown_config_key_is_one_line_with_the_closest_name(tmp_path, train_command,
                                                              subprocess_env):
  workdir = tmp_path / "run"
  command = train_command(workdir, **{"train.stepz": 10})
  result = subprocess.run(command, env=subprocess_env(1), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert _stderr_lines(result) == [
      "error: unknown config key config.train.stepz (did you mean config.train.steps?)"]
  assert not workdir.exists()


def test_a_late_data_error_is_short_and_leaves_no_workdir(tmp_path, train_command, subprocess_env):
  workdir = tmp_path / "run"
  command = train_command(workdir, **{"data.source": "files",
                                      "data.files_glob": str(tmp_path / "none" / "*.txt")})
  result = subprocess.run(command, env=subprocess_env(1), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: data.files_glob=")
  assert "matches no files" in result.stderr
  assert not workdir.exists()


def _blank_corpus(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(3):
    (corpus / f"{i}.txt").write_text("\n  \n")
  return {"data__source": "files", "data__files_glob": str(corpus / "*.txt")}


@pytest.mark.parametrize("case,overrides,expected", [
    ("objective", {"objective__name": "clmm"}, "objective.name"),
    ("optimizer", {"optimizer__name": "adamz"}, "optimizer.name"),
    ("sequence", {"data__sequence_length": 0}, "data.sequence_length"),
    ("mesh", {"mesh__tensor": 3}, "mesh"),
    ("tfds", {"data__source": "tfds", "data__tfds_name": "llm_jax_never_prepared"}, "TFDS"),
    ("empty", None, "Empty corpus"),
])
def test_errors_found_before_the_workdir_is_created(tmp_path, tiny_config, case, overrides,
                                                    expected):
  del case
  overrides = _blank_corpus(tmp_path) if overrides is None else overrides
  workdir = tmp_path / "run"
  with pytest.raises(workdir_lib.ConfigError, match=expected):
    loop.train(tiny_config("gpt_tiny", steps=2, **overrides), str(workdir))
  assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_refused_untouched(tmp_path, tiny_config):
  afile = tmp_path / "run"
  afile.write_text("notes")
  with pytest.raises(workdir_lib.ConfigError, match="not a directory"):
    loop.train(tiny_config("gpt_tiny", steps=2), str(afile))
  assert afile.read_text() == "notes"


def test_sigterm_during_startup_stops_cleanly(tmp_path, train_command, subprocess_env):
  workdir = tmp_path / "run"
  process = subprocess.Popen(train_command(workdir, **{"train.steps": 100000}),
                             env=subprocess_env(1), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (workdir / "config.json").exists():
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)  # before the first step has run (or while it compiles)
  stdout, stderr = process.communicate(timeout=240)
  assert process.returncode == 0, stderr[-2000:]
  assert "before the first step" in stdout or "preempted at step 1;" in stdout, stdout
  assert "Traceback" not in stderr
