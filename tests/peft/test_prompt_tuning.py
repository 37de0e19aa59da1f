"""Prompt tuning (and P-tuning's prompt encoder): parity with Hugging Face peft for GPT-2, LLaMA,
BERT and T5, KV-cache generation, and packed rows."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from llm_jax import convert
from llm_jax import decoding
from llm_jax import models
from llm_jax.peft import hf_peft_prompts
from tests.convert.conftest import TOLERANCE, max_abs_diff, padded_tokens, randomize, report
from tests.peft.test_prefix_tuning import (  # pylint: disable=unused-import
    LENGTHS, MAX_LEN, VOCAB, _tiny, bases, greedy_reference, merge, ours_logits, peft_adapter,
    save_base, torch_logits)

P = 3


@pytest.mark.hf
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_prompt_tuning_matches_peft(bases, kind, tmp_path):
  import peft  # pylint: disable=g-import-not-at-top

  base = bases[kind]
  config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)
  peft_model, adapter_config, tensors = peft_adapter(base["torch"], config, str(tmp_path),
                                                     seed=1, std=1.0)
  tokens, mask = padded_tokens(3, VOCAB, LENGTHS, MAX_LEN)
  theirs = torch_logits(peft_model, input_ids=tokens, attention_mask=mask)
  assert theirs.shape[1] == P + MAX_LEN
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base["cfg"])
  assert cfg.peft.prompt_length == P and new["soft_prompt"]["embedding"].shape == (P, 32)
  ours = ours_logits(cfg, merge(base["params"], new), tokens, mask)
  assert ours.shape == (len(LENGTHS), MAX_LEN, VOCAB)  # real tokens only
  diff = max_abs_diff(ours, theirs[:, P:], mask)
  report(f"prompt {kind}", diff)
  assert diff <= TOLERANCE
  assert max_abs_diff(ours_logits(base["cfg"], base["params"], tokens, mask), theirs[:, P:],
                      mask) > 1e-2


@pytest.mark.hf
@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_p_tuning_matches_peft(bases, encoder, tmp_path):
  """P_TUNING: the saved prompts, and the prompt encoder run in NumPy from its weights."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  base = bases["gpt2"]
  config = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=P,
                                    encoder_hidden_size=16,
                                    encoder_reparameterization_type=encoder)
  peft_model, adapter_config, tensors = peft_adapter(base["torch"], config, str(tmp_path),
                                                     seed=2, std=0.5)
  tokens, mask = padded_tokens(4, VOCAB, LENGTHS, MAX_LEN)
  theirs = torch_logits(peft_model, input_ids=tokens, attention_mask=mask)[:, P:]
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base["cfg"])
  diff = max_abs_diff(ours_logits(cfg, merge(base["params"], new), tokens, mask), theirs, mask)
  report(f"p-tuning ({encoder}) gpt2", diff)
  assert diff <= TOLERANCE

  encoder_module = peft_model.prompt_encoder["default"]
  state = {f"prompt_encoder.default.{k}": v.numpy() for k, v in encoder_module.state_dict().items()}
  with torch.no_grad():
    expected = encoder_module(torch.arange(P)[None])[0].numpy()
  np.testing.assert_allclose(hf_peft_prompts.p_tuning_prompts(adapter_config, state), expected,
                             atol=1e-5)
  _, from_weights = hf_peft_prompts.convert(adapter_config, state, base["cfg"])
  np.testing.assert_allclose(from_weights["soft_prompt"]["embedding"], expected, atol=1e-5)


@pytest.mark.hf
def test_bert_prompt_tuning_matches_peft(tmp_path):
  """FEATURE_EXTRACTION on BertModel: hidden states of the real tokens and the pooler output
  (which reads the first soft-prompt token, as HF does)."""
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
      torch_model, peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=P),
      str(tmp_path / "a"), seed=3, std=1.0)
  tokens, mask = padded_tokens(5, VOCAB, [8, 5, 2], 8)
  with torch.no_grad():
    out = peft_model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                     attention_mask=torch.as_tensor(mask, dtype=torch.long))
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base_cfg)
  ours = models.build_model(cfg).apply({"params": merge(params, new)}, tokens,
                                       input_segment_ids=mask)
  diff = max_abs_diff(ours["hidden_states"], out.last_hidden_state.numpy()[:, P:], mask)
  report("prompt bert (hidden states)", diff)
  assert diff <= TOLERANCE
  diff = float(np.max(np.abs(np.asarray(ours["pooled"]) - out.pooler_output.numpy())))
  report("prompt bert (pooled)", diff)
  assert diff <= TOLERANCE


@pytest.mark.hf
def test_t5_prompt_tuning_matches_peft(tmp_path):
  """SEQ_2_SEQ_LM: the soft prompt goes before the encoder input."""
  import peft  # pylint: disable=g-import-not-at-top

  torch_model = save_base("t5", str(tmp_path / "hf"))
  _, params, base_cfg = convert.from_hf(str(tmp_path / "hf"))
  peft_model, adapter_config, tensors = peft_adapter(
      torch_model, peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=P),
      str(tmp_path / "a"), seed=4, std=1.0)
  assert tensors["prompt_embeddings"].shape[0] == 2 * P  # num_transformer_submodules = 2
  inputs, enc_mask = padded_tokens(5, VOCAB, [7, 4, 2], 7)
  dec, dec_mask = padded_tokens(6, VOCAB, [5, 5, 3], 5)
  theirs = torch_logits(peft_model, input_ids=inputs, attention_mask=enc_mask,
                        decoder_input_ids=dec, decoder_attention_mask=dec_mask)
  cfg, new = hf_peft_prompts.convert(adapter_config, tensors, base_cfg)
  out = jax.jit(models.build_model(cfg).apply)(
      {"params": merge(params, new)}, inputs, dec, input_segment_ids=enc_mask,
      decoder_segment_ids=dec_mask)
  assert out["encoder_hidden_states"].shape == (3, 7, 32)
  diff = max_abs_diff(out["logits"], theirs, dec_mask)
  report("prompt t5", diff)
  assert diff <= TOLERANCE


@pytest.mark.parametrize("preset,peft_fields", [
    ("llama_tiny", dict(prompt_length=3)),
    ("gpt_tiny", dict(prompt_length=2, prefix_length=2)),
])
def test_greedy_generation_through_the_cache(preset, peft_fields):
  """The soft prompt is written into the cache at prefill; steps feed one token."""
  cfg, model, params = _tiny(preset, seed=1, peft=peft_fields)
  prompts = [[5, 9, 2, 33, 7], [12, 4]]
  out = decoding.generate(model, params, prompts, max_new_tokens=5)
  assert np.asarray(out.tokens).tolist() == greedy_reference(model, params, prompts, 5)


def test_decoder_prompt_is_seen_by_every_packed_segment():
  cfg, model, params = _tiny("llama_tiny", peft=dict(prompt_length=3))
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (1, 7)), jnp.int32)
  seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2]])
  pos = jnp.asarray([[0, 1, 2, 0, 1, 2, 3]])
  apply = jax.jit(model.apply)
  packed = apply({"params": params}, tokens, input_segment_ids=seg, input_positions=pos)["logits"]
  assert packed.shape == (1, 7, 64)
  # Each sequence alone (the first right-padded), in one call.
  alone = apply({"params": params}, jnp.stack([jnp.pad(tokens[0, :3], (0, 1)), tokens[0, 3:]]),
                input_segment_ids=jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]]))["logits"]
  np.testing.assert_allclose(packed[0], jnp.concatenate([alone[0, :3], alone[1]]), atol=1e-5)


def test_encoder_prompt_joins_the_first_segment():
  """Bidirectional: only a packed row's first segment sees the prompt (documented)."""
  cfg, model, params = _tiny("bert_tiny", peft=dict(prompt_length=2))
  base_cfg, base_model, _ = _tiny("bert_tiny")
  base_params = {k: v for k, v in params.items() if k != "soft_prompt"}
  tokens = jnp.asarray(np.random.default_rng(1).integers(1, 64, (1, 6)), jnp.int32)
  seg = jnp.asarray([[1, 1, 1, 2, 2, 2]])
  pos = jnp.asarray([[0, 1, 2, 0, 1, 2]])
  packed = jax.jit(model.apply)({"params": params}, tokens, input_segment_ids=seg,
                                input_positions=pos)["hidden_states"]
  first = jax.jit(model.apply)({"params": params}, tokens[:, :3])["hidden_states"]
  # The second segment sees no prompt, but its positions are still shifted by prompt_length.
  second = jax.jit(base_model.apply)({"params": base_params}, tokens[:, 3:],
                                     input_positions=pos[:, 3:] + 2)["hidden_states"]
  np.testing.assert_allclose(packed, jnp.concatenate([first, second], 1), atol=1e-5)
