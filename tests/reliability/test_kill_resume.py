"""SIGKILL at random moments, then the same command: losses and parameters match an
uninterrupted run bit for bit."""

import os
import random
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import loop
from llm_jax.training import metrics as metrics_lib
from tests.training.conftest import REPO

STEPS = 8
RUN = {"train.steps": STEPS, "train.checkpoint_every": 2, "optimizer.learning_rate": 3e-3}


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics_lib.read_rows(workdir) if "loss" in r}


def _final_state(workdir):
  step_dir = os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR, str(STEPS), "state")
  return jax.tree.leaves(ocp.PyTreeCheckpointer().restore(step_dir))


def _kill_and_resume(tmp_path, kills, train_command, subprocess_env, tiny_config):
  reference = tmp_path / "reference"
  loop.train(tiny_config("gpt_tiny", steps=STEPS, train__checkpoint_every=2), str(reference))

  workdir = tmp_path / "killed"
  command = train_command(workdir, **RUN)
  rng = random.Random(0)
  killed_at = []
  for _ in range(kills):
    process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (workdir / metrics_lib.METRICS_FILE).exists():
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))  # somewhere in startup, a step, a save or a metrics write
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    killed_at.append(max(_losses(workdir), default=0))
  result = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert min(killed_at) < STEPS, f"every kill came after the run ended: {killed_at}"

  expected, resumed = _losses(reference), _losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  assert [resumed[s] for s in range(1, STEPS + 1)] == [expected[s] for s in range(1, STEPS + 1)]
  for a, b in zip(_final_state(reference), _final_state(workdir)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_sigkill_resumes_bit_identically(tmp_path, train_command, subprocess_env, tiny_config):
  _kill_and_resume(tmp_path, 1, train_command, subprocess_env, tiny_config)


@pytest.mark.slow
def test_five_sigkills_resume_bit_identically(tmp_path, train_command, subprocess_env,
                                             tiny_config):
  _kill_and_resume(tmp_path, 5, train_command, subprocess_env, tiny_config)
