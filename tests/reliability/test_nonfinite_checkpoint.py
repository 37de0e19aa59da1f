"""Divergence never leaves a non-finite checkpoint; the message names the step and quantity."""

import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import loop


def _saved_steps(workdir):
  return checkpoint_lib.finalized_steps(os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR))


def _all_finite(step_dir):
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(step_dir, "state"))
  leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(tree)]
  return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_a_nan_grad_norm_with_a_finite_loss_is_caught():
  history = [(1, {"loss": 5.9, "grad_norm": 1.7, "update_norm": 1e8}),
             (2, {"loss": 6.5e9, "grad_norm": np.nan, "update_norm": np.nan})]
  step, name, _, _ = loop._first_non_finite(history)  # pylint: disable=protected-access
  assert (step, name) == (2, "grad_norm")


def test_divergence_at_a_huge_learning_rate_saves_no_non_finite_state(tmp_path, tiny_config):
  # The run: learning_rate=1e6 makes the grad norm NaN while the loss is still finite.
  cfg = tiny_config("gpt_tiny", steps=8, train__checkpoint_every=1, optimizer__learning_rate=1e6,
                    optimizer__warmup_steps=0)
  with pytest.raises(loop.NonFiniteLossError, match=r"(loss|grad_norm|update_norm) is \S+ at "
                     r"step (\d+); stopping without saving") as error:
    loop.train(cfg, str(tmp_path))
  bad_step = int(error.value.args[0].split(" at step ")[1].split(";")[0])
  saved = _saved_steps(tmp_path)
  assert saved and max(saved) == bad_step - 1
  assert all(_all_finite(os.path.join(tmp_path, "checkpoints", str(s))) for s in saved)


def test_nan_at_step_is_reported_at_that_step(tmp_path, tiny_config):
  cfg = tiny_config("gpt_tiny", steps=4, train__checkpoint_every=1, train__nan_at_step=3)
  with pytest.raises(loop.NonFiniteLossError, match=r"loss is nan at step 3;.*\(step 2\) is kept"):
    loop.train(cfg, str(tmp_path))
  assert _saved_steps(tmp_path) == [1, 2]
