"""`python -m llm_jax.evaluate --tasks=...` over a workdir's checkpoints: table, JSON, plot."""

import json

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from llm_jax import config as config_lib
from llm_jax import evaluate
from llm_jax import models
from llm_jax.evaluation import harness
from llm_jax.evaluation import load
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import train_step

STEPS = (2, 5)


class _NoDataIterator:
  def get_state(self):
    return {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A byte-level tiny decoder workdir with two checkpoints of different parameters."""
  root = tmp_path_factory.mktemp("harness_cli")
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(dict(d_model=16, num_layers=1, num_heads=2, d_ff=32, max_len=64))
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=64,
                       data_dir=str(root / "data")))
  cfg.objective.name = "clm"
  cfg.train.batch_size = 8
  cfg = config_lib.finalize(cfg)
  path = root / "run"
  path.mkdir()
  (path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  model = models.build_model(cfg.model)
  checkpointer = checkpoint_lib.Checkpointer(str(path), save_every=1, keep=5, async_save=False)
  for seed, step in enumerate(STEPS):
    params = nn.unbox(model.init(jax.random.key(seed), **train_step.init_batch(cfg, 1))["params"])
    state = train_step.TrainState(step=np.int32(step), params=params,
                                  opt_state=optax.sgd(1e-3).init(params))
    checkpointer.save(step, state, _NoDataIterator(), force=True)
  checkpointer.close()
  return str(path)


def _run_cli(*args):
  evaluate.FLAGS.unparse_flags()
  evaluate.FLAGS(["evaluate", *args])
  try:
    return evaluate.main(["evaluate"])
  finally:
    evaluate.FLAGS.unparse_flags()


def test_tasks_over_all_steps_write_json_markdown_and_plot(workdir, tmp_path):
  out = tmp_path / "eval"
  assert _run_cli(f"--workdir={workdir}", "--tasks=arithmetic_mc,counting_perplexity",
                  "--num_fewshot=1", "--limit=4", "--steps=all", "--noefficiency",
                  f"--out={out}") == 0
  results = json.loads((out / "results.json").read_text())
  assert [run["step"] for run in results["runs"]] == list(STEPS)
  # Each step's numbers are those of its own checkpoint.
  model, params, cfg, tokenizer = load.load_from_workdir(workdir, step=STEPS[0])
  direct = harness.run_task(harness.get_task("arithmetic_mc"), model, params, cfg.model,
                            tokenizer, harness.HarnessOptions(num_fewshot=1, limit=4))
  first, second = (run["tasks"]["arithmetic_mc"] for run in results["runs"])
  assert first["records"][0]["log_likelihoods"] == pytest.approx(
      direct["records"][0]["log_likelihoods"], abs=1e-6)
  assert first["records"][0]["log_likelihoods"] != second["records"][0]["log_likelihoods"]
  table = (out / "results.md").read_text()
  assert f"| {STEPS[1]} | counting_perplexity | byte_perplexity |" in table
  assert (out / "metrics_by_step.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_task_flags_fail_before_writing(workdir, tmp_path, capsys):
  out = tmp_path / "eval"
  assert _run_cli(f"--workdir={workdir}", "--tasks=arithmetic_mc,nope", f"--out={out}") == 2
  assert "unknown task 'nope'" in capsys.readouterr().err
  assert _run_cli(f"--workdir={workdir}", "--tasks=arithmetic_mc", "--steps=3,4",
                  f"--out={out}") == 2
  assert "no checkpoint at step(s) [3, 4]" in capsys.readouterr().err
  assert not out.exists()
