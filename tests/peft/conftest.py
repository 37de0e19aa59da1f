"""Small random transformers models (LLaMA GQA, GPT-2, BERT, T5 v1.1) converted with from_hf,
with a padded batch, and helpers to run ours and theirs; random peft adapters on them.

torch, transformers and peft are imported inside the helpers, so the tests that do not need
them also run where the [hf] extra is not installed.
"""

import copy
import types

import numpy as np
import pytest

from llm_jax import convert
from tests.convert.conftest import (  # noqa: F401  (helpers: the fixture)
    helpers, max_abs_diff, padded_tokens, randomize, report)

VOCAB = 99
LENGTHS, MAX_LEN = [10, 7, 3], 10  # right padding in rows 1 and 2
DECODER_LENGTHS, DECODER_LEN = [7, 3, 5], 7
TOLERANCE = 1e-4
FAMILIES = ("llama", "gpt2", "bert", "t5")


def _torch_model(family: str):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  if family == "llama":
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=1,
        eos_token_id=2)
    model = transformers.LlamaForCausalLM(config)
  elif family == "gpt2":
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB,
                                     n_positions=32, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
  elif family == "bert":
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=VOCAB,
                                     max_position_embeddings=40)
    model = transformers.BertForMaskedLM(config)
  elif family == "t5":  # v1.1: gated GELU, untied head
    config = transformers.T5Config(
        d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, vocab_size=VOCAB,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    model = transformers.T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(VOCAB, 32))
  else:
    raise ValueError(family)
  model = randomize(model, seed=0)
  if family == "bert":  # BERT's 'LayerNorm' scales escape randomize's norm rule: keep them ~1
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      for name, p in model.named_parameters():
        if name.endswith("LayerNorm.weight"):
          p.add_(1.0)
  return model


def batch(family: str) -> dict[str, np.ndarray]:
  tokens, mask = padded_tokens(0, VOCAB, LENGTHS, MAX_LEN)
  out = dict(tokens=tokens, mask=mask)
  if family == "t5":
    out["decoder_tokens"], out["decoder_mask"] = padded_tokens(1, VOCAB, DECODER_LENGTHS,
                                                               DECODER_LEN)
  return out


def logits_mask(family: str, inputs) -> np.ndarray:
  return inputs["decoder_mask"] if family == "t5" else inputs["mask"]


def torch_logits(family: str, torch_model, inputs) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top

  t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long)
  kwargs = dict(input_ids=t(inputs["tokens"]), attention_mask=t(inputs["mask"]))
  if family == "t5":
    kwargs.update(decoder_input_ids=t(inputs["decoder_tokens"]),
                  decoder_attention_mask=t(inputs["decoder_mask"]))
  with torch.no_grad():
    return torch_model(**kwargs).logits.numpy()


def our_logits(family: str, model, params, inputs) -> np.ndarray:
  if family == "t5":
    out = model.apply({"params": params}, inputs["tokens"], inputs["decoder_tokens"],
                      input_segment_ids=inputs["mask"], decoder_segment_ids=inputs["decoder_mask"])
  else:
    out = model.apply({"params": params}, inputs["tokens"], input_segment_ids=inputs["mask"])
  return np.asarray(out["logits"])


def with_random_adapter(torch_model, peft_config, seed: int):
  """A peft model around a copy of `torch_model` with every adapter weight random and non-zero
  (peft starts lora_B at zero and ia3_l at one)."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  peft_model = peft.get_peft_model(copy.deepcopy(torch_model), peft_config)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    n = 0
    for name, p in peft_model.named_parameters():
      if "lora_" in name:
        p.copy_(0.2 * torch.randn(p.shape, generator=generator))
        n += 1
      elif "ia3_l" in name:
        p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=generator))
        n += 1
  assert n, "no adapter parameters"
  return peft_model.eval()


@pytest.fixture(scope="session")
def hf_base(tmp_path_factory):
  """family -> namespace(torch_model, folder, model, params, cfg, inputs, torch_logits), built
  on first use."""
  cache = {}

  def get(family: str):
    if family not in cache:
      torch_model = _torch_model(family)
      folder = str(tmp_path_factory.mktemp(f"{family}_base") / "hf")
      torch_model.save_pretrained(folder, safe_serialization=True)
      model, params, cfg = convert.from_hf(folder)
      inputs = batch(family)
      cache[family] = types.SimpleNamespace(
          family=family, torch_model=torch_model, folder=folder, model=model, params=params,
          cfg=cfg, inputs=inputs, torch_logits=torch_logits(family, torch_model, inputs))
    return cache[family]

  return get
