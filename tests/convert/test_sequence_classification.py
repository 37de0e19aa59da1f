"""GPT-2 and LLaMA *ForSequenceClassification: the `score` head is our decoder's classifier."""

import jax
import numpy as np
import pytest

from llm_jax import convert

CASES = {
    "gpt2": ("GPT2Config", "GPT2ForSequenceClassification",
             dict(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=99)),
    "llama": ("LlamaConfig", "LlamaForSequenceClassification",
              dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=64, vocab_size=99,
                   max_position_embeddings=32)),
}
PAD = 0


@pytest.mark.hf
@pytest.mark.parametrize("case", sorted(CASES))
def test_score_head_converts_both_ways(case, tmp_path, helpers):
  import transformers  # pylint: disable=g-import-not-at-top
  config_cls, model_cls, sizes = CASES[case]
  config = getattr(transformers, config_cls)(**sizes, num_labels=3, pad_token_id=PAD)
  hf = helpers.randomize(getattr(transformers, model_cls)(config), seed=0)
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  tokens, mask = helpers.padded_tokens(0, 99, [9, 5, 7], 9)

  model, params, cfg = convert.from_hf(str(tmp_path / "hf"))
  assert cfg.num_labels == 3
  ours = model.apply({"params": params}, tokens, input_segment_ids=mask)["class_logits"]
  theirs = helpers.torch_outputs(hf, input_ids=tokens, attention_mask=mask)["logits"]
  diff = float(np.max(np.abs(np.asarray(ours) - theirs)))
  helpers.report(f"{case} sequence classification", diff)
  assert diff < helpers.TOLERANCE

  convert.to_hf(cfg, jax.device_get(params), str(tmp_path / "out"))
  again = getattr(transformers, model_cls).from_pretrained(tmp_path / "out").eval()
  exported = helpers.torch_outputs(again, input_ids=tokens, attention_mask=mask)["logits"]
  assert np.max(np.abs(exported - theirs)) < 1e-6
