"""Cloze scores against full-forward log-softmax; generation metrics against `generate` itself."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from llm_jax import decoding
from llm_jax import models
from llm_jax.data.byte_tokenizer import ByteTokenizer
from llm_jax.evaluation import task_eval


def _random_model(preset, **overrides):
  cfg = models.get_preset(preset)
  cfg.update(overrides)
  model = models.build_model(cfg)
  x = np.ones((1, 4), np.int32)
  args = (x, x) if cfg.family == "encoder_decoder" else (x,)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), *args)["params"])
  return model, params, cfg


@pytest.fixture(scope="module")
def gpt():
  return _random_model("gpt_tiny")


# 137 ids: the specials and ASCII of the byte tokenizer below. A larger init_std than the
# presets' gives varied random outputs, not one repeated byte.
SMALL = dict(vocab_size=137, num_layers=1, init_std=0.2)


@pytest.fixture(scope="module")
def t5():
  return _random_model("t5_tiny", **SMALL)


@pytest.fixture(scope="module")
def small_gpt():
  return _random_model("gpt_tiny", **SMALL)


def _log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@functools.lru_cache
def _jitted_apply(model):
  return jax.jit(lambda params, *rows: model.apply({"params": params}, *rows)["logits"][0])


def _logits(model, params, *rows):
  """Logits of one unpadded example (jitted: compiled once per length)."""
  return _jitted_apply(model)(params, *(np.array([r], np.int32) for r in rows))


def _decoder_continuation_log_likelihood(model, params, prompt, candidate):
  """Sum of log p(candidate tokens | prompt) from the logits of the single unpadded row."""
  row = prompt + candidate
  logits = _logits(model, params, row[:-1])
  log_probs = _log_softmax(logits)
  positions = np.arange(len(prompt) - 1, len(row) - 1)
  return log_probs[positions, candidate].sum(), log_probs[len(prompt) - 1]


PROMPTS = [[2, 14, 15, 9, 26], [2, 8], [2, 27, 18, 28, 18, 28, 45, 23, 5, 36]]
CANDIDATES = [[[30, 31], [40], [7, 8, 9]], [[3], [4, 5, 6, 7], [12, 12]], [[1], [60, 2], [33]]]


def test_cloze_decoder_scores_are_candidate_log_likelihoods(gpt):
  model, params, _ = gpt
  scores = task_eval.cloze_predictions(model, params, "decoder", PROMPTS, CANDIDATES, pad_id=0,
                                       batch_size=4)
  assert scores.shape == (3, 3)
  for i, (prompt, options) in enumerate(zip(PROMPTS, CANDIDATES)):
    for c, candidate in enumerate(options):
      expected, _ = _decoder_continuation_log_likelihood(model, params, prompt, candidate)
      assert scores[i, c] == pytest.approx(expected, rel=1e-5, abs=1e-5)
  # Another batch size and pad id change nothing.
  again = task_eval.cloze_predictions(model, params, "decoder", PROMPTS, CANDIDATES, pad_id=7,
                                      batch_size=5)
  np.testing.assert_allclose(again, scores, rtol=1e-5, atol=1e-5)


def test_cloze_argmax_picks_the_models_most_likely_candidate(gpt):
  model, params, _ = gpt
  candidates, labels = [], []
  for i, prompt in enumerate(PROMPTS):
    _, next_log_probs = _decoder_continuation_log_likelihood(model, params, prompt, [0])
    order = np.argsort(next_log_probs)
    best, others = int(order[-1]), [int(t) for t in order[:3]]
    position = i % 4
    candidates.append([[t] for t in others[:position] + [best] + others[position:]])
    labels.append(position)
  scores = task_eval.cloze_predictions(model, params, "decoder", PROMPTS, candidates, pad_id=0)
  np.testing.assert_array_equal(np.argmax(scores, axis=1), labels)
  metrics = task_eval.cloze_metrics(model, params, "decoder", PROMPTS, candidates, labels,
                                    pad_id=0)
  assert metrics == {"accuracy": 1.0, "macro_f1": 1.0, "num_examples": 3}
  # Example 0 labelled wrong: predictions [0, 1, 2] vs labels [1, 1, 2].
  wrong = task_eval.cloze_metrics(model, params, "decoder", PROMPTS, candidates, [1, 1, 2],
                                  pad_id=0)
  assert wrong["accuracy"] == pytest.approx(2 / 3)
  assert wrong["macro_f1"] == pytest.approx((0 + 2 / 3 + 1) / 3)
  weighted = task_eval.cloze_metrics(model, params, "decoder", PROMPTS, candidates, [1, 1, 2],
                                     pad_id=0, weights=[0, 1, 1])
  assert weighted["accuracy"] == 1.0


def test_cloze_encoder_decoder_scores_the_decoder_side(t5):
  model, params, cfg = t5
  prompts = [[5, 6, 7, 1], [9, 10, 1]]
  candidates = [[[11, 12, 1], [13, 1]], [[20, 1], [21, 22, 23, 1]]]
  scores = task_eval.cloze_predictions(model, params, "encoder_decoder", prompts, candidates,
                                       pad_id=0, batch_size=3)
  start = cfg.decoder_start_token_id
  for i, (prompt, options) in enumerate(zip(prompts, candidates)):
    for c, candidate in enumerate(options):
      logits = _logits(model, params, prompt, [start] + candidate[:-1])
      expected = _log_softmax(logits)[np.arange(len(candidate)), candidate].sum()
      assert scores[i, c] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_cloze_rejects_bad_input(gpt):
  model, params, _ = gpt
  with pytest.raises(ValueError, match="same"):
    task_eval.cloze_predictions(model, params, "decoder", [[2, 3], [2, 4]],
                                [[[5], [6]], [[5]]], pad_id=0)
  with pytest.raises(ValueError, match=r"prompts\[1\] has no tokens"):
    task_eval.cloze_predictions(model, params, "decoder", [[2, 3], []], [[[5]], [[5]]], pad_id=0)
  with pytest.raises(ValueError, match="2 prompts but 1"):
    task_eval.cloze_predictions(model, params, "decoder", [[2, 3], [2]], [[[5]]], pad_id=0)
  with pytest.raises(ValueError, match="family"):
    task_eval.cloze_predictions(model, params, "encoder", [[2, 3]], [[[5]]], pad_id=0)
  with pytest.raises(ValueError, match="labels has shape"):
    task_eval.cloze_metrics(model, params, "decoder", [[2, 3]], [[[5], [6]]], [0, 1], pad_id=0)


# -- generation_metrics -----------------------------------------------------------------------

# 265 ids, more than the models' 137: ASCII punctuation is a word to BLEU's tokenizer, so
# their random outputs have 4-grams.
TOKENIZER = ByteTokenizer(num_sentinels=0)
# Two prompt lengths (fewer compilations); a batch of 4 mixes them.
TEXTS = ["abc", "hello!", "xyz", "2+2=4?", "foo"]


@pytest.fixture(scope="module", params=["small_gpt", "t5"])
def generator(request):
  model, params, cfg = request.getfixturevalue(request.param)
  prompts = [TOKENIZER.encode(t) for t in TEXTS]
  # Each prompt alone, decoded by hand: the model's own greedy outputs.
  outputs = []
  for prompt in prompts:
    tokens = decoding.generate(model, params, [prompt], max_new_tokens=12,
                               eos_id=TOKENIZER.specials.eos_id, pad_id=0).tokens[0].tolist()
    if TOKENIZER.specials.eos_id in tokens:
      tokens = tokens[:tokens.index(TOKENIZER.specials.eos_id)]
    outputs.append(TOKENIZER.decode(tokens))
  return model, params, cfg, prompts, outputs


def test_own_greedy_outputs_score_exact_match_1_and_bleu_100(generator):
  model, params, cfg, prompts, outputs = generator
  assert all(outputs), outputs
  # batch_size 4: the second batch is 2 examples filled up with copies.
  metrics = task_eval.generation_metrics(model, params, cfg, TOKENIZER,
                                         list(zip(prompts, outputs)), max_new_tokens=12,
                                         batch_size=4, num_samples=2)
  assert metrics["exact_match"] == 1.0
  assert metrics["bleu"] == pytest.approx(100.0)
  assert metrics["num_examples"] == len(TEXTS)
  assert metrics["samples"] == [(outputs[0], outputs[0]), (outputs[1], outputs[1])]
  assert set(metrics) == {"exact_match", "bleu", "rouge1", "rouge2", "rougeL", "num_examples",
                          "samples"}


def test_mismatched_references_score_lower(generator):
  model, params, cfg, prompts, outputs = generator
  references = list(outputs)
  references[1] = "certainly not what a random model says"
  metrics = task_eval.generation_metrics(model, params, cfg, TOKENIZER,
                                         list(zip(prompts, references)), max_new_tokens=12,
                                         batch_size=4)
  assert metrics["exact_match"] == pytest.approx((len(TEXTS) - 1) / len(TEXTS))
  assert metrics["bleu"] < 100.0
  # Whitespace around a reference does not matter to exact match.
  padded = [(p, f"  {o}\n") for p, o in zip(prompts, outputs)]
  assert task_eval.generation_metrics(model, params, cfg, TOKENIZER, padded, 12,
                                      batch_size=4)["exact_match"] == 1.0


def test_generation_rejects_prompts_too_long(gpt):
  model, params, cfg = gpt
  with pytest.raises(ValueError, match=r"prompts\[1\] has 60 tokens"):
    task_eval.generation_metrics(model, params, cfg, TOKENIZER,
                                 [([5, 6], "a"), ([5] * 60, "b")], max_new_tokens=8)
  with pytest.raises(ValueError, match="non-empty"):
    task_eval.generation_metrics(model, params, cfg, TOKENIZER, [], max_new_tokens=8)
