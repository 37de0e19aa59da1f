"""Sentence embeddings: pooling, padding independence, the CLI, and parity with
sentence-transformers on a tiny random BERT folder with a Pooling module."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import llm_jax
from harness_helpers import tiny_byte_decoder
from llm_jax import embed as embed_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
TEXTS = ["w1 w2 w3", "w5", " ".join(f"w{i}" for i in range(30)), "w7 w7 w8 w9"]


@pytest.fixture(scope="module")
def decoder():
  return tiny_byte_decoder(max_len=32)


def test_embed_is_callable_from_the_package_and_pools_as_documented(decoder):
  model, params, _, tokenizer = decoder
  texts = ["hello", "longer one", "x"]  # one padded length (16), batches of 2
  embed = lambda t, **kw: llm_jax.embed(model, params, t, tokenizer=tokenizer, batch_size=2, **kw)
  mean = embed(texts, normalize=False)
  last = embed(texts, pooling="last", normalize=False)
  _, state = model.apply({"params": params}, np.asarray([tokenizer.encode(texts[1])]),
                         capture_intermediates=True, mutable=["intermediates"])
  hidden = np.asarray(state["intermediates"]["decoder"]["__call__"][0][0])
  np.testing.assert_allclose(mean[1], hidden.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(last[1], hidden[-1], atol=1e-5)
  # Padding and batching never change a vector; normalised vectors have norm 1.
  alone = embed(texts[1:2], normalize=False)
  np.testing.assert_allclose(alone[0], mean[1], atol=1e-5)
  unit = embed(texts)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="pooling must be one of"):
    embed(texts, pooling="median")


def _save_sentence_transformers_folder(folder, pooling_config, normalize=True):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from harness_helpers import word_tokenizer_files  # pylint: disable=g-import-not-at-top
  os.makedirs(folder)
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=len(BERT_WORDS), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=64, initializer_range=0.3)
  transformers.BertModel(config).eval().save_pretrained(folder)
  word_tokenizer_files(folder, BERT_WORDS, bert=True)
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  if normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    os.makedirs(os.path.join(folder, "2_Normalize"))
  with open(os.path.join(folder, "modules.json"), "w") as f:
    json.dump(modules, f)
  os.makedirs(os.path.join(folder, "1_Pooling"))
  with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
    json.dump({"word_embedding_dimension": 32, **pooling_config}, f)
  with open(os.path.join(folder, "sentence_bert_config.json"), "w") as f:
    json.dump({"max_seq_length": 16, "do_lower_case": False}, f)


@pytest.mark.hf
@pytest.mark.parametrize("pooling_config,expected", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode": "cls"}, "cls"),
])
def test_embeddings_match_sentence_transformers(tmp_path, pooling_config, expected):
  os.environ["HF_HUB_OFFLINE"] = "1"
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / "st")
  _save_sentence_transformers_folder(folder, pooling_config)
  theirs = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(TEXTS)
  model, params, tokenizer, settings = embed_module.load_embedder(folder)
  assert settings == {"pooling": expected, "normalize": True, "max_length": 16}
  ours = llm_jax.embed(model, params, TEXTS, tokenizer=tokenizer, pooling=settings["pooling"],
                       normalize=settings["normalize"], max_length=settings["max_length"])
  diff = float(np.max(np.abs(ours - theirs)))
  print(f"\n[parity] sentence-transformers ({expected} pooling, normalised): max abs diff {diff:.2e}")
  assert diff <= 1e-5


@pytest.mark.hf
def test_cli_writes_the_embeddings_of_a_folder(tmp_path):
  folder = str(tmp_path / "st")
  _save_sentence_transformers_folder(folder, {"pooling_mode": "mean"})
  (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
  assert embed_module.main(["embed", f"--hf={folder}", f"--texts_file={tmp_path / 'texts.txt'}",
                            f"--out={tmp_path / 'e.npy'}"]) == 0
  model, params, tokenizer, _ = embed_module.load_embedder(folder)
  np.testing.assert_allclose(np.load(tmp_path / "e.npy"),
                             embed_module.embed(model, params, TEXTS, tokenizer=tokenizer,
                                                max_length=16),
                             atol=1e-6)
  with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
    json.dump({"pooling_mode": "weightedmean"}, f)
  assert embed_module.main(["embed", f"--hf={folder}",
                            f"--texts_file={tmp_path / 'texts.txt'}"]) == 2


def test_python_dash_m_runs_the_module_without_a_double_import_warning(tmp_path):
  result = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "llm_jax.embed",
                           "--texts_file=/nonexistent", "--hf=/nonexistent"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "does not exist" in result.stderr
