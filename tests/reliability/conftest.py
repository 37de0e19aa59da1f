"""The training fixtures (tiny configs, CLI commands, subprocess env) shared with tests/training."""

from tests.training.conftest import (  # noqa: F401  pylint: disable=unused-import
    REPO, compilation_cache, data_dir, load_config_fixture, subprocess_env_fixture,
    tiny_config_fixture, train_command_fixture)
