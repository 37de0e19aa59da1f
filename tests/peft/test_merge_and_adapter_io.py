"""merge_peft folds LoRA / (IA)^3 into the kernels (-> to_hf -> transformers); adapter-only files
round-trip bit-identically and hold nothing else."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

from llm_jax import convert
from llm_jax import models
from llm_jax.convert import common
from llm_jax.peft import adapter_io
from llm_jax.peft import hf_peft
from llm_jax.peft import quantize
from llm_jax.peft.merge import merge_peft
from tests.peft import conftest as c

TOKENS = np.random.default_rng(0).integers(1, 256, (2, 8)).astype(np.int32)
# value and wo have both methods; wo and out are scaled at their inputs.
PEFT = dict(lora_rank=4, lora_alpha=8.0, lora_targets=r"attention/(query|value)$|mlp/wo$",
            ia3_targets=r"attention/(value|out)$|mlp/wo$", ia3_feedforward=r"mlp/wo$|/out$")


def _cfg(scan_layers=False, **peft):
  cfg = models.get_preset("llama_tiny")
  cfg.scan_layers = scan_layers
  cfg.peft.update(peft)
  return cfg


def _random_params(cfg, seed=0):
  """Initialised params with every leaf perturbed, so lora_b and ia3_scale are not 0 / 1."""
  model = models.build_model(cfg)
  rng = np.random.default_rng(seed)
  params = nn.unbox(jax.jit(lambda key: model.init(key, TOKENS)["params"])(jax.random.key(0)))
  return model, jax.tree.map(
      lambda x: np.asarray(x) + (0.2 * rng.standard_normal(x.shape)).astype(np.float32), params)


def _zero_params(cfg):
  """Zeros in the shapes of the model's params (no compilation)."""
  return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                      models.abstract_params(models.build_model(cfg), cfg))


def _logits(model, params):
  return np.asarray(jax.jit(lambda p: model.apply({"params": p}, TOKENS)["logits"])(params))


def _leaf_paths(tree):
  return ["/".join(k) for k in traverse_util.flatten_dict(tree)]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_merged_equals_unmerged(scan_layers):
  cfg = _cfg(scan_layers, **PEFT)
  model, params = _random_params(cfg)
  plain_cfg, plain = merge_peft(cfg, params)
  assert (plain_cfg.peft.lora_rank, plain_cfg.peft.ia3_targets) == (0, "")
  assert (cfg.peft.lora_rank, cfg.peft.ia3_targets) == (4, PEFT["ia3_targets"])  # unchanged
  plain_model = models.build_model(plain_cfg)
  assert sorted(_leaf_paths(plain)) == sorted(_leaf_paths(
      models.abstract_params(plain_model, plain_cfg)))
  diff = float(np.max(np.abs(_logits(plain_model, plain) - _logits(model, params))))
  print(f"\n[parity] merged vs unmerged lora+ia3 (scan_layers={scan_layers}): "
        f"max abs diff {diff:.3e}")
  assert diff <= 1e-4  # float32 logits: (W + s A B) x rounds differently from W x + s (x A) B


def test_merging_a_quantized_base_dequantizes_it():
  cfg = _cfg(lora_rank=4, lora_targets=r"attention/(query|value)$", base_quantization="int8",
             quantization_block_size=16)
  model, params = _random_params(cfg)
  qparams = quantize.quantize_base(cfg, params)
  plain_cfg, plain = merge_peft(cfg, qparams)
  assert plain_cfg.peft.base_quantization == "none"
  kernel = plain["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
  assert isinstance(kernel, np.ndarray) and kernel.dtype == np.float32
  diff = float(np.max(np.abs(_logits(models.build_model(plain_cfg), plain)
                             - _logits(model, qparams))))
  assert diff <= 1e-4  # float32 logits, as in the other merges


def test_merge_refuses_what_cannot_merge():
  for field in ("prefix_length", "prompt_length", "adapter_size"):
    cfg = _cfg(lora_rank=4)
    cfg.peft[field] = 4
    with pytest.raises(ValueError, match=rf"model\.peft\.{field}=4 cannot be merged"):
      merge_peft(cfg, {})


def test_adapter_files_round_trip_bit_identically(tmp_path):
  cfg = _cfg(**PEFT)
  _, params = _random_params(cfg, seed=1)
  folder = str(tmp_path / "adapter")
  adapter_io.save_adapter(folder, cfg, params)
  assert sorted(os.listdir(folder)) == ["adapter_config.json", "adapter_model.safetensors"]
  saved = common.read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
  expected = sorted(p for p in _leaf_paths(params) if p.rsplit("/", 1)[-1] in (
      "lora_a", "lora_b", "ia3_scale"))
  assert sorted(saved) == expected and len(expected) == 2 * (3 * 2 + 3)

  fresh = _zero_params(cfg)
  peft_cfg, loaded = adapter_io.load_adapter(folder, fresh)
  assert peft_cfg == cfg.peft.to_dict()
  flat_loaded = dict(zip(_leaf_paths(loaded), jax.tree.leaves(loaded)))
  flat_fresh = dict(zip(_leaf_paths(fresh), jax.tree.leaves(fresh)))
  flat_params = dict(zip(_leaf_paths(params), jax.tree.leaves(params)))
  for path, value in flat_loaded.items():
    want = flat_params[path] if path in expected else flat_fresh[path]
    assert value.dtype == want.dtype and value.tobytes() == want.tobytes(), path

  with pytest.raises(ValueError, match="exists and is not empty"):
    adapter_io.save_adapter(folder, cfg, params)
  more = _zero_params(_cfg(**{**PEFT, "lora_targets": r"attention/(query|key|value)$"}))
  with pytest.raises(ValueError, match=r"tensor 'decoder/layers_0/self_attention/key/lora_a' is "
                                       r"missing"):
    adapter_io.load_adapter(folder, more)
  other_rank = _zero_params(_cfg(**{**PEFT, "lora_rank": 2}))
  with pytest.raises(ValueError, match=r"tensor 'decoder/layers_0/mlp/wo/lora_a' has shape "
                                       r"\(128, 4\), the model's parameter has \(128, 2\)"):
    adapter_io.load_adapter(folder, other_rank)


def test_a_failed_save_leaves_nothing(tmp_path):
  bad = {"decoder": {"x": {"lora_a": np.zeros(3, np.complex64)}}}  # no safetensors dtype
  with pytest.raises(KeyError):
    adapter_io.save_adapter(str(tmp_path / "adapter"), _cfg(lora_rank=4), bad)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="no peft parameters"):
    adapter_io.save_adapter(str(tmp_path / "adapter"), _cfg(), {"a": {"kernel": np.ones(2)}})


def test_is_peft_param():
  yes = ["decoder/layers_0/self_attention/query/lora_a", "decoder/layers/mlp/wo/ia3_scale",
         "decoder/layers_0/self_attention/prefix/key", "decoder/prefix_encoder/wi/kernel",
         "soft_prompt/embedding", "decoder/layers_0/mlp_adapter/down/kernel", "x/lora_b"]
  no = ["decoder/layers_0/self_attention/query/kernel", "token_embed/embedding",
        "decoder/position_embed/embedding", "head/lm_head/kernel", "decoder/final_norm/scale"]
  assert all(adapter_io.is_peft_param(p) for p in yes)
  assert not any(adapter_io.is_peft_param(p) for p in no)


@pytest.mark.hf
def test_merge_then_to_hf_gives_transformers_the_same_logits(hf_base, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  for family, config in [
      ("gpt2", peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"],
                               fan_in_fan_out=True)),
      ("llama", peft.IA3Config(target_modules=["q_proj", "v_proj", "down_proj", "up_proj"],
                               feedforward_modules=["down_proj"]))]:
    base = hf_base(family)
    peft_model = c.with_random_adapter(base.torch_model, config, seed=3)
    peft_model.save_pretrained(str(tmp_path / family / "adapter"))
    theirs = c.torch_logits(family, peft_model, base.inputs)
    cfg, params = hf_peft.from_hf_peft(str(tmp_path / family / "adapter"), base.cfg,
                                       base.params)
    plain_cfg, plain = merge_peft(cfg, params)
    convert.to_hf(plain_cfg, plain, str(tmp_path / family / "merged"))
    with open(tmp_path / family / "merged" / "config.json") as f:
      assert "peft" not in json.load(f)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / family /
                                                                     "merged"))
    diff = c.max_abs_diff(c.torch_logits(family, reloaded, base.inputs), theirs,
                          base.inputs["mask"])
    c.report(f"merged {type(config).__name__} {family} -> to_hf -> transformers vs peft", diff)
    assert diff <= c.TOLERANCE
