"""A tiny trained-shape GPT workdir (random weights, as the training loop writes it) and the
stdlib corpus prepared once per session."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import models
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import train_step


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("llm_jax_data"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("LLM_JAX_DATA_DIR", path)
    yield path


def tiny_gpt_config(data_dir, scan_layers=False):
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(dict(d_model=32, num_layers=2, num_heads=2, d_ff=64, max_len=32,
                        scan_layers=scan_layers))
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=32, data_dir=data_dir))
  cfg.objective.name = "clm"
  cfg.train.batch_size = 8
  return config_lib.finalize(cfg)


def write_workdir(path, cfg, params, step=1):
  path.mkdir(parents=True)
  (path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  state = train_step.TrainState(step=np.int32(step), params=params,
                                opt_state=optax.sgd(1e-3).init(params))
  checkpointer = checkpoint_lib.Checkpointer(str(path), save_every=1, keep=1, async_save=False)
  checkpointer.save(step, state, data.make_pipeline(cfg, split="train"), force=True)
  checkpointer.close()
  return str(path)


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, data_dir):
  """(workdir, cfg, params) of a 2-layer GPT with d_model 32."""
  root = tmp_path_factory.mktemp("compress")
  cfg = tiny_gpt_config(str(root / "data"))
  model = models.build_model(cfg.model)
  params = nn.unbox(model.init(jax.random.key(3), **train_step.init_batch(cfg, 1))["params"])
  return write_workdir(root / "run", cfg, params), cfg, params


@pytest.fixture(scope="session")
def gpt_config():
  """tiny_gpt_config(data_dir, scan_layers=False) -> a finalized 2-layer GPT config."""
  return tiny_gpt_config
