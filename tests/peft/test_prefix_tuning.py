"""Prefix tuning / P-tuning v2: parity with Hugging Face peft (GPT-2, LLaMA GQA, T5), HF's
position numbering, scan_layers, and KV-cache generation."""

import copy
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import convert
from llm_jax import decoding
from llm_jax import models
from llm_jax.convert import common
from llm_jax.peft import hf_peft_prompts
from tests.convert.conftest import TOLERANCE, max_abs_diff, padded_tokens, randomize, report

VOCAB = 99
LENGTHS, MAX_LEN = [9, 6, 3], 9  # right padding in rows 1 and 2
P = 4  # virtual tokens


def merge(base: dict, new: dict) -> dict:
  """base with new's leaves added (nested dicts)."""
  out = dict(base)
  for k, v in new.items():
    out[k] = merge(base[k], v) if isinstance(v, dict) and k in base else v
  return out


def save_base(kind: str, folder: str, **overrides):
  import transformers  # pylint: disable=g-import-not-at-top

  if kind == "gpt2":
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB,
                                     n_positions=32, bos_token_id=0, eos_token_id=0, **overrides)
    model = transformers.GPT2LMHeadModel(config)
  elif kind == "llama":
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=1,
        eos_token_id=2, **overrides)
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, **overrides)
    model = transformers.T5ForConditionalGeneration(config)
  model = randomize(model, seed=0)
  model.save_pretrained(folder, safe_serialization=True)
  return model


def peft_adapter(torch_model, peft_config, folder: str, seed: int, std: float):
  """A peft model of a copy of torch_model with random prompt-encoder weights, saved to folder;
  -> (peft model, adapter_config, adapter tensors)."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  peft_model = peft.get_peft_model(copy.deepcopy(torch_model), peft_config)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in peft_model.prompt_encoder.parameters():
      p.copy_(torch.randn(p.shape, generator=generator) * std)
  peft_model.eval().save_pretrained(folder, safe_serialization=True)
  with open(os.path.join(folder, "adapter_config.json")) as f:
    adapter_config = json.load(f)
  tensors = common.read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
  return peft_model, adapter_config, tensors


def torch_logits(torch_model, **inputs):
  import torch  # pylint: disable=g-import-not-at-top

  with torch.no_grad():
    out = torch_model(**{k: torch.as_tensor(np.asarray(v), dtype=torch.long)
                         for k, v in inputs.items()})
  return out.logits.numpy()


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
  """Random GPT-2 and LLaMA (4 query / 2 key-value heads) saved by transformers and converted."""
  out = {}
  for kind in ("gpt2", "llama"):
    folder = str(tmp_path_factory.mktemp(kind) / "hf")
    torch_model = save_base(kind, folder)
    model, params, cfg = convert.from_hf(folder)
    out[kind] = dict(torch=torch_model, params=params, cfg=cfg)
  return out


def ours_logits(cfg, params, tokens, mask):
  model = models.build_model(cfg)
  return np.asarray(jax.jit(model.apply)({"params": params}, tokens,
                                         input_segment_ids=mask)["logits"])


@pytest.mark.hf
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("projection", [False, True])
def test_prefix_tuning_matches_peft(bases, kind, projection, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = bases[kind]
  config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P,
                                   prefix_projection=projection, encoder_hidden_size=24)
  peft_model, adapter_config, tensors = peft_adapter(base["torch"], config, str(tmp_path),
                                                     seed=1, std=0.3 if projection else 0.5)
  assert sorted(tensors) == ["prompt_embeddings"]
  tokens, mask = padded_tokens(3, VOCAB, LENGTHS, MAX_LEN)
  theirs = torch_logits(peft_model, input_ids=tokens, attention_mask=mask)

  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base["cfg"])
  assert (cfg.peft.prefix_length, cfg.peft.prefix_hidden) == (P, 0)
  kv_heads = 2 if kind == "llama" else 4
  assert new["decoder"]["layers_1"]["self_attention"]["prefix"]["key"].shape == (P, kv_heads, 8)
  diff = max_abs_diff(ours_logits(cfg, merge(base["params"], new), tokens, mask), theirs, mask)
  report(f"prefix {kind}{' (prefix_projection)' if projection else ''}", diff)
  assert diff <= TOLERANCE
  if not projection:  # The base model alone differs: the prefix matters.
    assert max_abs_diff(ours_logits(base["cfg"], base["params"], tokens, mask), theirs, mask) > 1e-2

  if projection:  # The full encoder weights keep the reparameterisation MLP (prefix_hidden).
    state = {f"prompt_encoder.default.{k}": v.numpy()
             for k, v in peft_model.prompt_encoder["default"].state_dict().items()}
    cfg_mlp, new_mlp = hf_peft_prompts.convert(adapter_config, state, base["cfg"])
    assert (cfg_mlp.peft.prefix_length, cfg_mlp.peft.prefix_hidden) == (P, 24)
    assert new_mlp["decoder"]["prefix_encoder"]["wo"]["kernel"].shape == (24, 2, 2, kv_heads, 8)
    diff = max_abs_diff(ours_logits(cfg_mlp, merge(base["params"], new_mlp), tokens, mask), theirs, mask)
    report(f"prefix {kind} (prefix_projection, MLP kept)", diff)
    assert diff <= TOLERANCE


@pytest.mark.hf
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hf_numbers_real_tokens_after_the_prefix(bases, kind):
  """What the models match: with past_key_values of length P, HF's positions start at P."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  peft_model = peft.get_peft_model(
      copy.deepcopy(bases[kind]["torch"]),
      peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)).eval()
  tokens, mask = padded_tokens(4, VOCAB, LENGTHS, MAX_LEN)
  ids, mask_t = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask)
  full_mask = torch.cat([torch.ones(len(LENGTHS), P, dtype=mask_t.dtype), mask_t], 1)
  with torch.no_grad():
    default = peft_model(input_ids=ids, attention_mask=mask_t).logits
    base = peft_model.get_base_model()
    def with_positions(start):
      positions = torch.arange(start, start + MAX_LEN)[None]
      return base(input_ids=ids, attention_mask=full_mask, past_key_values=peft_model.get_prompt(3),
                  position_ids=positions).logits
    assert torch.allclose(default, with_positions(P), atol=1e-6)
    assert not torch.allclose(default, with_positions(0), atol=1e-3)


@pytest.mark.hf
def test_t5_prefix_tuning_matches_peft(tmp_path):
  """Seq2seq: peft's prefix reaches the decoder's self-attention only (see hf_peft_prompts)."""
  import peft  # pylint: disable=g-import-not-at-top

  torch_model = save_base("t5", str(tmp_path / "hf"))
  _, params, base_cfg = convert.from_hf(str(tmp_path / "hf"))
  config = peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=P)
  peft_model, adapter_config, tensors = peft_adapter(torch_model, config, str(tmp_path / "a"),
                                                     seed=2, std=0.5)
  inputs, enc_mask = padded_tokens(5, VOCAB, [7, 4, 2], 7)
  dec, dec_mask = padded_tokens(6, VOCAB, [5, 5, 3], 5)
  theirs = torch_logits(peft_model, input_ids=inputs, attention_mask=enc_mask,
                        decoder_input_ids=dec, decoder_attention_mask=dec_mask)
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base_cfg)
  model = models.build_model(cfg)
  ours = jax.jit(model.apply)({"params": merge(params, new)}, inputs, dec,
                              input_segment_ids=enc_mask, decoder_segment_ids=dec_mask)["logits"]
  diff = max_abs_diff(ours, theirs, dec_mask)
  report("prefix t5 (decoder self-attention)", diff)
  assert diff <= TOLERANCE


@pytest.mark.hf
def test_bert_prefix_tuning_matches_peft(tmp_path):
  """FEATURE_EXTRACTION on BertModel: every encoder layer gets the prefix; positions from P."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, vocab_size=VOCAB,
                                   max_position_embeddings=40)
  torch_model = randomize(transformers.BertModel(config), seed=0)
  torch_model.save_pretrained(str(tmp_path / "hf"), safe_serialization=True)
  _, params, base_cfg = convert.from_hf(str(tmp_path / "hf"))
  peft_model, adapter_config, tensors = peft_adapter(
      torch_model, peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=P),
      str(tmp_path / "a"), seed=3, std=0.5)
  tokens, mask = padded_tokens(5, VOCAB, [8, 5, 2], 8)
  with torch.no_grad():
    theirs = peft_model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                        attention_mask=torch.as_tensor(mask, dtype=torch.long))
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base_cfg)
  assert new["encoder"]["layers_0"]["self_attention"]["prefix"]["value"].shape == (P, 4, 8)
  ours = jax.jit(models.build_model(cfg).apply)({"params": merge(params, new)}, tokens,
                                                input_segment_ids=mask)
  diff = max_abs_diff(ours["hidden_states"], theirs.last_hidden_state.numpy(), mask)
  report("prefix bert (hidden states)", diff)
  assert diff <= TOLERANCE


def _dummy(cfg):
  dummy = jnp.zeros((1, 4), jnp.int32)
  return (dummy, dummy) if cfg.family == "encoder_decoder" else (dummy,)


def _tiny(preset, seed=0, **overrides):
  cfg = models.get_preset(preset)
  cfg.update(dict(vocab_size=64, d_model=32, num_layers=2, d_ff=64, max_len=32))
  peft_fields = overrides.pop("peft", {})
  cfg.update(overrides)
  cfg.peft.update(peft_fields)
  model = models.build_model(cfg)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *_dummy(cfg))["params"])
  rng = np.random.default_rng(seed)
  draw = lambda path, leaf: (float(path[-1].key == "scale")
                             + 0.3 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
  return cfg, model, jax.tree_util.tree_map_with_path(draw, shapes)


def _stack(unrolled: dict, num_layers: int) -> dict:
  """Unrolled params -> scan_layers params (layers_{i} -> one 'layers' tree)."""
  out = {}
  for k, v in unrolled.items():
    if k.startswith("layers_"):
      if k == "layers_0":
        out["layers"] = jax.tree.map(lambda *xs: np.stack(xs),
                                     *[unrolled[f"layers_{i}"] for i in range(num_layers)])
    elif isinstance(v, dict):
      out[k] = _stack(v, num_layers)
    else:
      out[k] = v
  return out


@pytest.mark.parametrize("preset,peft_fields", [
    ("llama_tiny", dict(prefix_length=3)),
    ("gpt_tiny", dict(prefix_length=3, prefix_hidden=16)),
    ("t5_tiny", dict(prefix_length=2)),
])
def test_scan_layers_equals_unrolled(preset, peft_fields):
  cfg, model, params = _tiny(preset, peft=peft_fields, head_dim=8 if preset == "t5_tiny" else None)
  scanned_cfg = copy.deepcopy(cfg)
  scanned_cfg.scan_layers = True
  scanned = models.build_model(scanned_cfg)
  stacked = _stack(params, 2)
  expected = jax.tree.map(lambda s: s.shape, nn.unbox(jax.eval_shape(
      scanned.init, jax.random.key(0), *_dummy(cfg))["params"]))
  assert jax.tree.map(np.shape, stacked) == expected
  if "prefix_hidden" not in peft_fields:  # [layers, prefix_length, kv_heads, head_dim]
    key_shape = expected["decoder"]["layers"]["self_attention"]["prefix"]["key"]
    assert key_shape[:2] == (2, peft_fields["prefix_length"])
  tokens, mask = padded_tokens(0, 64, [6, 3], 6)
  args = (tokens, tokens) if cfg.family == "encoder_decoder" else (tokens,)
  kw = (dict(input_segment_ids=mask, decoder_segment_ids=mask) if cfg.family == "encoder_decoder"
        else dict(input_segment_ids=mask))
  a = jax.jit(model.apply)({"params": params}, *args, **kw)["logits"]
  b = jax.jit(scanned.apply)({"params": stacked}, *args, **kw)["logits"]
  np.testing.assert_allclose(np.asarray(a)[mask == 1], np.asarray(b)[mask == 1], atol=1e-5)


def greedy_reference(model, params, prompts, steps):
  """Greedy continuations by step-by-step argmax of the full forward pass (no cache): each
  row right-padded to one width, so one compiled program serves every step."""
  apply = jax.jit(model.apply)
  rows = [list(p) for p in prompts]
  width = max(map(len, rows)) + steps
  for _ in range(steps):
    tokens, mask = decoding.right_pad(rows, 0)
    tokens = np.pad(tokens, ((0, 0), (0, width - tokens.shape[1])))
    mask = np.pad(mask, ((0, 0), (0, width - mask.shape[1])))
    logits = np.asarray(apply({"params": params}, tokens, input_segment_ids=mask)["logits"])
    for r, row in enumerate(rows):
      row.append(int(np.argmax(logits[r, len(row) - 1])))
  return [r[len(p):] for r, p in zip(rows, prompts)]


@pytest.mark.parametrize("preset,peft_fields", [
    ("llama_tiny", dict(prefix_length=3)),
    ("gpt_tiny", dict(prefix_length=2, prefix_hidden=16)),
])
def test_greedy_generation_through_the_cache(preset, peft_fields):
  cfg, model, params = _tiny(preset, seed=1, peft=peft_fields)
  prompts = [[5, 9, 2, 33, 7], [12, 4]]
  out = decoding.generate(model, params, prompts, max_new_tokens=5)
  assert np.asarray(out.tokens).tolist() == greedy_reference(model, params, prompts, 5)


def test_t5_prefix_generation_through_the_cache():
  cfg, model, params = _tiny("t5_tiny", seed=2, head_dim=8, peft=dict(prefix_length=2))
  prompt = jnp.asarray([[5, 9, 2, 33]])
  out = decoding.generate(model, params, prompt, max_new_tokens=4)
  apply = jax.jit(model.apply)
  dec = np.full((1, 5), 0, np.int32)
  dec[0, 0] = cfg.decoder_start_token_id
  for t in range(4):  # Causal decoder: the columns after t do not change column t.
    dec[0, t + 1] = int(np.argmax(apply({"params": params}, prompt, dec)["logits"][0, t]))
  assert np.asarray(out.tokens[0]).tolist() == dec[0, 1:].tolist()


def test_prefix_is_seen_by_every_packed_segment():
  cfg, model, params = _tiny("llama_tiny", peft=dict(prefix_length=3))
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (1, 7)), jnp.int32)
  # Two packed sequences (3 + 4 tokens) give what each gives alone.
  seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2]])
  pos = jnp.asarray([[0, 1, 2, 0, 1, 2, 3]])
  apply = jax.jit(model.apply)
  packed = apply({"params": params}, tokens, input_segment_ids=seg, input_positions=pos)["logits"]
  # Each sequence alone (the first right-padded), in one call.
  alone = apply({"params": params}, jnp.stack([jnp.pad(tokens[0, :3], (0, 1)), tokens[0, 3:]]),
                input_segment_ids=jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]]))["logits"]
  np.testing.assert_allclose(packed[0], jnp.concatenate([alone[0, :3], alone[1]]), atol=1e-5)
