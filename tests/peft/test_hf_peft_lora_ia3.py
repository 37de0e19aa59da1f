"""Hugging Face peft LoRA and (IA)^3 adapters imported with from_hf_peft: same logits as peft."""

import json
import os

import numpy as np
import pytest

from llm_jax import convert
from llm_jax import models
from llm_jax.peft import hf_peft
from llm_jax.peft import targets
from tests.peft import conftest as c

# family -> (LoraConfig kwargs, IA3Config kwargs)
ADAPTERS = {
    "llama": (dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                       "gate_proj", "up_proj", "down_proj",
                                                       "lm_head"]),
              dict(target_modules=["k_proj", "v_proj", "down_proj"],
                   feedforward_modules=["down_proj"])),
    "gpt2": (dict(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                  fan_in_fan_out=True),
             dict(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"],
                  fan_in_fan_out=True)),
    "bert": (dict(r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"]),
             dict(target_modules=r".*\.(key|value|output\.dense)",  # peft: re.fullmatch
                  feedforward_modules=r".*layer\.\d+\.output\.dense")),
    "t5": (dict(r=4, lora_alpha=12, target_modules=["q", "k", "v", "o", "wi_0", "wi_1", "wo"]),
           dict(target_modules=["k", "v", "wo"], feedforward_modules=["wo"])),
}


def _import(base, peft_config, tmp_path, seed=1):
  peft_model = c.with_random_adapter(base.torch_model, peft_config, seed)
  peft_model.save_pretrained(str(tmp_path / "adapter"))
  theirs = c.torch_logits(base.family, peft_model, base.inputs)
  cfg, params = hf_peft.from_hf_peft(str(tmp_path / "adapter"), base.cfg, base.params)
  ours = c.our_logits(base.family, models.build_model(cfg), params, base.inputs)
  mask = c.logits_mask(base.family, base.inputs)
  return cfg, params, c.max_abs_diff(ours, theirs, mask), c.max_abs_diff(
      theirs, base.torch_logits, mask)


@pytest.mark.hf
@pytest.mark.parametrize("family", c.FAMILIES)
def test_lora_matches_peft(family, hf_base, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = hf_base(family)
  cfg, params, diff, effect = _import(base, peft.LoraConfig(**ADAPTERS[family][0]), tmp_path)
  c.report(f"lora {family}", diff)
  assert effect > 1e-2, "the adapter should change the logits"
  assert diff <= c.TOLERANCE
  assert cfg.peft.lora_rank == 4
  chosen = targets.check_targets(cfg, params)["lora"]
  n_layers = {"llama": 7 * 2 + 1, "gpt2": 6 * 2, "bert": 6 * 2 + 1, "t5": 2 * 7 + 2 * 11}
  assert len(chosen) == n_layers[family], chosen


@pytest.mark.hf
@pytest.mark.parametrize("family", c.FAMILIES)
def test_ia3_matches_peft(family, hf_base, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = hf_base(family)
  cfg, params, diff, effect = _import(base, peft.IA3Config(**ADAPTERS[family][1]), tmp_path)
  c.report(f"ia3 {family}", diff)
  assert effect > 1e-2, "the adapter should change the logits"
  assert diff <= c.TOLERANCE
  assert cfg.peft.ia3_targets and cfg.peft.ia3_feedforward
  assert cfg.peft.lora_rank == 0


@pytest.mark.hf
def test_lora_on_some_layers_gets_an_explicit_regex(hf_base, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = hf_base("llama")
  config = peft.LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj"],
                           layers_to_transform=[1])
  cfg, params, diff, _ = _import(base, config, tmp_path)
  c.report("lora llama (layer 1 only, rsLoRA)", diff)
  assert diff <= c.TOLERANCE
  assert cfg.peft.lora_targets == (r"^(?:decoder/layers_1/self_attention/query|"
                                   r"decoder/layers_1/self_attention/value)$")
  assert "lora_a" not in params["decoder"]["layers_0"]["self_attention"]["query"]


@pytest.mark.hf
def test_lora_imports_into_a_scan_layers_model(hf_base, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = hf_base("llama")
  peft_model = c.with_random_adapter(
      base.torch_model, peft.LoraConfig(r=4, target_modules=["q_proj", "down_proj"]), seed=2)
  peft_model.save_pretrained(str(tmp_path / "adapter"))
  theirs = c.torch_logits("llama", peft_model, base.inputs)
  scan_cfg = base.cfg.copy_and_resolve_references()
  scan_cfg.scan_layers = True
  scan_params = hf_peft._stack_layers(base.params)  # pylint: disable=protected-access
  cfg, params = hf_peft.from_hf_peft(str(tmp_path / "adapter"), scan_cfg, scan_params)
  assert params["decoder"]["layers"]["mlp"]["wo"]["lora_a"].shape == (2, 48, 4)
  ours = c.our_logits("llama", models.build_model(cfg), params, base.inputs)
  diff = c.max_abs_diff(ours, theirs, base.inputs["mask"])
  c.report("lora llama into scan_layers", diff)
  assert diff <= c.TOLERANCE


@pytest.mark.hf
def test_unsupported_adapters_are_named(hf_base, tmp_path):
  base = hf_base("gpt2")
  folder = tmp_path / "adapter"
  os.makedirs(folder)
  convert.common.write_safetensors(
      str(folder / "adapter_model.safetensors"),
      {"base_model.model.transformer.wte.lora_embedding_A": np.zeros((4, 99), np.float32)})
  for config, message in [
      (dict(peft_type="LOHA"), "peft_type='LOHA' is not supported"),
      (dict(peft_type="LORA", r=4, use_dora=True), "use_dora=True"),
      (dict(peft_type="LORA", r=4), "lora_embedding_A"),
  ]:
    with open(folder / "adapter_config.json", "w") as f:
      json.dump(config, f)
    with pytest.raises(convert.ConversionError, match=message):
      hf_peft.from_hf_peft(str(folder), base.cfg, base.params)
