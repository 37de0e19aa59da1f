"""The decoder's last-token classification head against transformers' GPT2/Llama
ForSequenceClassification on a right-padded batch (score.weight -> classifier/kernel by hand)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import convert
from llm_jax import models
from tests.convert.conftest import TOLERANCE, randomize, report

VOCAB, LABELS = 99, 3
LENGTHS, MAX_LEN = [9, 6, 1], 9


def _save(kind: str, folder: str):
  import transformers  # pylint: disable=g-import-not-at-top

  if kind == "gpt2":
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB,
                                     n_positions=32, bos_token_id=0, eos_token_id=0,
                                     pad_token_id=0, num_labels=LABELS)
    classifier = transformers.GPT2ForSequenceClassification(config)
    lm = transformers.GPT2LMHeadModel(config)
    body, lm_body = classifier.transformer, lm.transformer
  else:
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=1,
        eos_token_id=2, pad_token_id=0, num_labels=LABELS, tie_word_embeddings=False)
    classifier = transformers.LlamaForSequenceClassification(config)
    lm = transformers.LlamaForCausalLM(config)
    body, lm_body = classifier.model, lm.model
  randomize(classifier, seed=0)
  # The converter reads causal-LM folders: save the same body under an LM head.
  lm_body.load_state_dict(body.state_dict())
  lm.save_pretrained(folder, safe_serialization=True)
  return classifier


@pytest.mark.hf
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_last_token_classifier_matches_transformers(kind, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top

  torch_model = _save(kind, str(tmp_path / "hf"))
  _, params, cfg = convert.from_hf(str(tmp_path / "hf"))
  cfg.num_labels = LABELS
  model = models.build_model(cfg)
  params = dict(params, classifier={"kernel": torch_model.score.weight.detach().numpy().T})

  rng = np.random.default_rng(0)
  mask = (np.arange(MAX_LEN)[None] < np.asarray(LENGTHS)[:, None]).astype(np.int32)
  tokens = rng.integers(3, VOCAB, mask.shape).astype(np.int32) * mask  # pad id 0 at the right
  with torch.no_grad():
    theirs = torch_model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                         attention_mask=torch.as_tensor(mask, dtype=torch.long)).logits.numpy()
  out = jax.jit(model.apply)({"params": params}, tokens, input_segment_ids=mask)
  assert out["class_logits"].shape == (len(LENGTHS), LABELS)
  assert out["class_logits"].dtype == jnp.float32
  diff = float(np.max(np.abs(np.asarray(out["class_logits"]) - theirs)))
  report(f"decoder classifier {kind}", diff)
  assert diff <= TOLERANCE


def test_classifier_reads_the_last_real_token():
  cfg = models.get_preset("gpt_tiny")
  cfg.update(dict(vocab_size=64, d_model=32, num_layers=1, d_ff=64, num_labels=2))
  model = models.build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 5)), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  assert params["classifier"]["kernel"].names == ("embed", None)
  assert set(params["classifier"]) == {"kernel"}  # no bias, as HF's score
  apply = jax.jit(model.apply)
  seg = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  padded = apply({"params": params}, tokens, input_segment_ids=seg)["class_logits"]
  short = apply({"params": params}, tokens[:, :3])["class_logits"]
  np.testing.assert_allclose(padded[0], short[0], atol=1e-6)  # row 0 ends at position 2
  full = apply({"params": params}, tokens)["class_logits"]  # no segment ids: the last position
  np.testing.assert_allclose(padded[1], full[1], atol=1e-6)
