"""Mistral: converted logits against transformers with a sliding window shorter than the input,
and export."""

import numpy as np
import pytest

from llm_jax import convert
from llm_jax import models

VOCAB = 64
LENGTHS, MAX_LEN = [12, 9, 4], 12


def _save_mistral(helpers, folder, sliding_window):
  import transformers  # pylint: disable=g-import-not-at-top

  config = transformers.MistralConfig(
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32,
    sliding_window=sliding_window, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  model = helpers.randomize(transformers.MistralForCausalLM(config), seed=0, std=0.3)
  model.save_pretrained(folder)
  return model


def _logits(model, params, tokens, mask):
  return np.asarray(model.apply({"params": params}, tokens, input_segment_ids=mask)["logits"])


@pytest.mark.hf
@pytest.mark.parametrize("window", [4, None])
def test_mistral_logits_match_transformers_and_export_round_trips(window, helpers, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top

  torch_model = _save_mistral(helpers, str(tmp_path / "hf"), window)
  model, params, cfg = convert.from_hf(str(tmp_path / "hf"))
  assert cfg.sliding_window == (window or 0)
  tokens, mask = helpers.padded_tokens(0, VOCAB, LENGTHS, MAX_LEN)
  theirs = helpers.torch_outputs(torch_model, input_ids=tokens, attention_mask=mask)["logits"]
  ours = _logits(model, params, tokens, mask)
  diff = helpers.max_abs_diff(ours, theirs, mask)
  helpers.report(f"mistral logits, sliding_window={window}", diff)
  assert diff <= helpers.TOLERANCE
  if window:  # the window changes the logits of the longer rows
    full_cfg = cfg.copy_and_resolve_references()
    full_cfg.sliding_window = 0
    full = _logits(models.build_model(full_cfg), params, tokens, mask)
    assert helpers.max_abs_diff(full, theirs, mask) > 100 * helpers.TOLERANCE

  convert.to_hf(cfg, params, str(tmp_path / "exported"))
  reloaded = transformers.MistralForCausalLM.from_pretrained(str(tmp_path / "exported")).eval()
  assert reloaded.config.sliding_window == window
  again = helpers.torch_outputs(reloaded, input_ids=tokens, attention_mask=mask)["logits"]
  assert helpers.max_abs_diff(ours, again, mask) <= helpers.TOLERANCE
