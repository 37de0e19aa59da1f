"""Every peft method's parameters are what a peft run trains by default, with the task head."""

import jax
import pytest

from llm_jax import config as config_lib
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import partition
from llm_jax.training import train_step as train_step_lib

METHODS = {
    "lora": dict(lora_rank=2),
    "ia3": dict(ia3_targets=r"attention/(key|value)$|mlp/wo$"),
    "prefix": dict(prefix_length=3),
    "prefix_mlp": dict(prefix_length=3, prefix_hidden=8),
    "prompt": dict(prompt_length=3),
    "adapters": dict(adapter_size=4),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_peft_run_trains_only_its_parameters_and_the_head(method):
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(vocab_size=64, d_model=16, num_layers=2, num_heads=2, d_ff=32, num_labels=3)
  cfg.model.peft.update(METHODS[method])
  cfg.train.batch_size = 2
  layout = train_step_lib.state_layout(cfg, models.build_model(cfg.model),
                                       sharding.make_mesh(cfg.mesh, jax.devices()[:1]))
  trainable = set(partition.flat(layout.abstract_state.params))
  frozen = set(partition.flat(layout.abstract_state.frozen))
  assert {"classifier/kernel"} < trainable
  assert trainable - {"classifier/kernel"}, "the method added no trainable parameter"
  assert "token_embed/embedding" in frozen and "decoder/layers_0/mlp/wi/kernel" in frozen
