"""Mixtral: converted logits and greedy decoding against transformers, export, the generate CLI."""

import io
import os

import numpy as np
import pytest

from llm_jax import convert
from llm_jax import decoding
from llm_jax.convert import ConversionError

VOCAB = 64
LENGTHS, MAX_LEN = [10, 7, 3], 10


def _save_mixtral(helpers, folder):
  import transformers  # pylint: disable=g-import-not-at-top

  config = transformers.MixtralConfig(
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32, num_local_experts=4,
    num_experts_per_tok=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  model = helpers.randomize(transformers.MixtralForCausalLM(config), seed=0, std=0.3)
  model.save_pretrained(folder)
  return model


@pytest.fixture(scope="module")
def mixtral(helpers, tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("mixtral") / "hf")
  torch_model = _save_mixtral(helpers, folder)
  model, params, cfg = convert.from_hf(folder)
  return dict(folder=folder, torch_model=torch_model, model=model, params=params, cfg=cfg)


def _logits(model, params, tokens, mask):
  return np.asarray(model.apply({"params": params}, tokens, input_segment_ids=mask)["logits"])


@pytest.mark.hf
def test_mixtral_logits_match_transformers(mixtral, helpers):
  cfg = mixtral["cfg"]
  assert (cfg.moe.num_experts, cfg.moe.top_k, cfg.moe.capacity_factor) == (4, 2, 0.0)
  tokens, mask = helpers.padded_tokens(0, VOCAB, LENGTHS, MAX_LEN)
  theirs = helpers.torch_outputs(mixtral["torch_model"], input_ids=tokens,
                                 attention_mask=mask)["logits"]
  diff = helpers.max_abs_diff(_logits(mixtral["model"], mixtral["params"], tokens, mask), theirs,
                              mask)
  helpers.report("mixtral logits", diff)
  assert diff <= helpers.TOLERANCE


@pytest.mark.hf
def test_mixtral_greedy_decoding_equals_transformers_generate(mixtral):
  import torch  # pylint: disable=g-import-not-at-top

  prompt = [5, 9, 17, 3, 30]
  ours = decoding.generate(mixtral["model"], mixtral["params"], [prompt], max_new_tokens=8)
  with torch.no_grad():
    ids = torch.tensor([prompt])
    theirs = mixtral["torch_model"].generate(
      input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
      eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
  assert list(np.asarray(ours.tokens[0])) == theirs


@pytest.mark.hf
def test_mixtral_export_loads_in_transformers_with_the_same_logits(mixtral, helpers, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top

  folder = str(tmp_path / "exported")
  convert.to_hf(mixtral["cfg"], mixtral["params"], folder)
  reloaded = transformers.MixtralForCausalLM.from_pretrained(folder).eval()
  tokens, mask = helpers.padded_tokens(1, VOCAB, LENGTHS, MAX_LEN)
  theirs = helpers.torch_outputs(reloaded, input_ids=tokens, attention_mask=mask)["logits"]
  ours = _logits(mixtral["model"], mixtral["params"], tokens, mask)
  assert helpers.max_abs_diff(ours, theirs, mask) <= helpers.TOLERANCE


@pytest.mark.hf
def test_mixtral_export_rejects_what_mixtral_cannot_express(mixtral, tmp_path):
  cfg = mixtral["cfg"].copy_and_resolve_references()
  cfg.moe.capacity_factor = 1.25
  with pytest.raises(ConversionError, match="capacity_factor"):
    convert.to_hf(cfg, mixtral["params"], str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.hf
def test_generate_cli_runs_a_converted_mixtral(mixtral):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from llm_jax import generate as generate_cli  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top

  words = ["<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(3, VOCAB)]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
    {w: i for i, w in enumerate(words)}, unk_token="w3"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tokenizer.save(os.path.join(mixtral["folder"], "tokenizer.json"))
  model, params, _, our_tokenizer = load.load_from_hf(mixtral["folder"])
  out = io.StringIO()
  text = generate_cli.run(model, params, our_tokenizer, "w5 w9 w17", max_new_tokens=6,
                          stream=True, out=out)
  expected = decoding.generate(mixtral["model"], mixtral["params"], [[5, 9, 17]],
                               max_new_tokens=6).tokens[0]
  assert text.split() == [words[i] for i in np.asarray(expected)][:len(text.split())]
  assert text and out.getvalue() == text + "\n"
