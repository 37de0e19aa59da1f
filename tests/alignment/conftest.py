"""A session-wide XLA compilation cache (the RL runs here share shapes) and one uninterrupted
GRPO run shared by the smoke and resume tests."""

import pytest

from llm_jax.alignment import rl_loop

from tests.alignment import rl_testing


@pytest.fixture(scope="session", autouse=True)
def alignment_compilation_cache(tmp_path_factory):
  import jax  # pylint: disable=g-import-not-at-top
  options = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache_alignment")),
             "jax_persistent_cache_min_compile_time_secs": 0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
  previous = {name: getattr(jax.config, name) for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  yield
  for name, value in previous.items():
    jax.config.update(name, value)


@pytest.fixture(scope="session")
def grpo_run(tmp_path_factory):
  """(workdir, result) of a 2-iteration GRPO run of the tiny test config."""
  workdir = str(tmp_path_factory.mktemp("grpo_uninterrupted"))
  result = rl_loop.train(rl_testing.tiny_rl_config("grpo", steps=2), workdir)
  return workdir, result
