"""Experiment configs and their validation: bad input fails before any work, naming the field."""

import pathlib
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from llm_jax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


def test_base_config_has_every_section():
  cfg = config_lib.base_config()
  assert set(cfg.keys()) == {"model", "data", "objective", "optimizer", "mesh", "sharding", "task",
                             "train", "quantization", "distill", "pruning"}
  assert cfg.model.vocab_size == 0  # filled from the tokenizer by finalize


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_docstring_starts_with_its_run_command(name, load_config):
  text = (REPO / "configs" / f"{name}.py").read_text()
  first_line = text.split('"""', 1)[1].lstrip("r").strip().splitlines()[0]
  assert first_line.startswith(
      f"python -m llm_jax.train --config=configs/{name}.py --workdir=workdirs/{name}")
  assert load_config(name).objective.name in (
      "clm", "prefix_lm", "mlm", "span_corruption", "bart", "ul2")


def test_published_sizes(load_config):
  gpt2 = load_config("gpt2_small")
  assert (gpt2.model.num_layers, gpt2.model.d_model, gpt2.model.num_heads) == (12, 768, 12)
  assert gpt2.objective.name == "clm"
  bert = load_config("bert_base")
  assert (bert.model.family, bert.objective.name) == ("encoder", "mlm")
  for name in ("t5_small", "t5_base"):
    t5 = load_config(name)
    assert (t5.objective.name, t5.optimizer.name) == ("span_corruption", "adafactor")
  llama = load_config("llama_1b")
  assert (llama.model.dtype, llama.mesh.fsdp, llama.mesh.data) == ("bfloat16", -1, 1)


def test_finalize_sets_vocab_size_from_tokenizer(tiny_config):
  from llm_jax import data  # pylint: disable=g-import-not-at-top
  cfg = config_lib.finalize(tiny_config("gpt_tiny"))
  tokenizer_vocab = data.make_tokenizer(cfg.data).vocab_size
  assert cfg.model.vocab_size >= tokenizer_vocab
  assert cfg.model.vocab_size % config_lib.VOCAB_MULTIPLE == 0
  assert cfg.model.vocab_size - tokenizer_vocab < config_lib.VOCAB_MULTIPLE


def test_finalize_rejects_vocab_smaller_than_tokenizer(tiny_config):
  cfg = tiny_config("gpt_tiny")
  cfg.model.vocab_size = 10
  with pytest.raises(ValueError, match="model.vocab_size"):
    config_lib.finalize(cfg)


def test_finalize_rejects_indivisible_mesh(tiny_config):
  cfg = tiny_config("gpt_tiny")
  cfg.mesh.data = 3  # 8 fake devices
  with pytest.raises(ValueError, match="mesh"):
    config_lib.finalize(cfg)


def test_finalize_rejects_batch_not_divisible_by_data_axis(tiny_config):
  cfg = tiny_config("gpt_tiny")
  cfg.train.batch_size = 12  # 8 data-parallel devices
  with pytest.raises(ValueError, match="train.batch_size"):
    config_lib.finalize(cfg)


def test_finalize_rejects_nonpositive_steps(tiny_config):
  cfg = tiny_config("gpt_tiny")
  cfg.train.steps = 0
  with pytest.raises(ValueError, match="train.steps"):
    config_lib.finalize(cfg)


def _parse(*overrides):
  argv = ["prog", f"--config={REPO / 'configs' / 'gpt_tiny.py'}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_cli_override_sets_typed_field():
  assert _parse("--config.train.steps=7").train.steps == 7


def test_cli_unknown_key_names_it():
  with pytest.raises(Exception, match="stepz"):
    _parse("--config.train.stepz=7")


def test_cli_wrong_type_names_the_field():
  with pytest.raises(Exception, match="train.steps"):
    _parse("--config.train.steps=many")


def test_cli_bad_config_fails_before_any_work(tmp_path, subprocess_env):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "llm_jax.train",
       f"--config={REPO / 'configs' / 'gpt_tiny.py'}", f"--workdir={workdir}",
       "--config.mesh.data=3"],
      env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "mesh" in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("name,millions", [
    ("gpt2_small", 124), ("bert_base", 110), ("t5_small", 77), ("t5_base", 248),
    ("llama_1b", 1236)])
def test_published_config_shards_on_eight_devices(name, millions, load_config):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from llm_jax import models, sharding  # pylint: disable=g-import-not-at-top
  from llm_jax.training import train_step  # pylint: disable=g-import-not-at-top
  cfg = load_config(name)
  config_lib.check_mesh(cfg, device_count=8)
  mesh = sharding.make_mesh(cfg.mesh)
  abstract_state, shardings = train_step.abstract_train_state(
      cfg, models.build_model(cfg.model), mesh)
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_state.params))
  assert abs(count / 1e6 - millions) / millions < 0.1, count
  assert len(jax.tree.leaves(shardings.params)) == len(jax.tree.leaves(abstract_state.params))
