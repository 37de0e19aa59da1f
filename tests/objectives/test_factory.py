import numpy as np
import pytest

from objectives_testing import (EOS, MASK, PAD, VOCAB_SIZE, make_config, make_specials,
                                random_words)
from llm_jax.objectives import SpecialTokens, default_objective_config, make_objective
from llm_jax.objectives.factory import NAMES

FAMILY = {"clm": "decoder", "prefix_lm": "decoder", "mlm": "encoder",
          "span_corruption": "encoder_decoder", "bart": "encoder_decoder",
          "ul2": "encoder_decoder", "deshuffle": "encoder_decoder",
          "bert_denoising": "encoder_decoder"}
TOKEN_FEATURES = ("inputs", "targets", "decoder_inputs", "prefix_mask", "token_type_ids",
                  "nsp_labels")


def objective_for(name, sequence_length=48, **overrides):
  return make_objective(make_config(name, **overrides), make_specials(), sequence_length)


def test_default_config_covers_every_objective():
  cfg = default_objective_config()
  assert cfg.name in NAMES and cfg.overflow in ("truncate", "error")
  assert cfg.decoder_start_id is None
  assert sorted(FAMILY) == sorted(NAMES)


def test_unknown_name_and_bad_overflow_raise():
  with pytest.raises(ValueError, match="objective.name"):
    objective_for("electra")
  with pytest.raises(ValueError, match="objective.overflow"):
    objective_for("clm", overflow="wrap")
  with pytest.raises(ValueError, match="target_length"):
    make_objective(make_config("clm"), make_specials(), 48, target_length=16)


@pytest.mark.parametrize("name", NAMES)
def test_feature_lengths_are_never_exceeded(name):
  objective = objective_for(name)
  assert objective.family == FAMILY[name]
  rng = np.random.default_rng(0)
  min_length = 2 if name in ("clm", "prefix_lm") else 1
  for length in list(range(min_length, 12)) + [objective.raw_length] * 30:
    ex = objective(random_words(rng, length), rng)
    assert set(ex) == set(objective.feature_lengths)
    for key, value in ex.items():
      assert value.ndim == 1 and len(value) <= objective.feature_lengths[key], key
      assert value.dtype == (np.float32 if key == "loss_weights" else np.int32), key
    assert len(ex["loss_weights"]) == len(ex["targets"])
    assert ex["loss_weights"].sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
  objective = objective_for(name)
  tokens = random_words(np.random.default_rng(0), objective.raw_length)
  first = objective(tokens, np.random.default_rng(7))
  second = objective(tokens, np.random.default_rng(7))
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
  others = [objective(tokens, np.random.default_rng(seed)) for seed in range(8, 12)]
  if name != "clm":  # the only deterministic objective
    assert any(any(not np.array_equal(o[k], first[k]) for k in first) for o in others)


@pytest.mark.parametrize("name", NAMES)
def test_overflow_error_or_truncate(name):
  strict = objective_for(name)
  too_long = random_words(np.random.default_rng(0), strict.raw_length + 5)
  with pytest.raises(ValueError, match=f"raw_length is {strict.raw_length}"):
    strict(too_long, np.random.default_rng(0))
  lenient = objective_for(name, overflow="truncate")
  cut = lenient(too_long, np.random.default_rng(1))
  exact = lenient(too_long[:lenient.raw_length], np.random.default_rng(1))
  for key in cut:
    np.testing.assert_array_equal(cut[key], exact[key])


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 4), np.int32), "1-D"),
    (np.array([11.0, 12.0]), "integer"),
    (np.array([11, VOCAB_SIZE]), r"\[0, 1000\)"),
    (np.array([-1, 12]), r"\[0, 1000\)"),
])
def test_bad_tokens_raise(bad, match):
  with pytest.raises(ValueError, match=match):
    objective_for("span_corruption")(bad, np.random.default_rng(0))


def test_special_tokens_collect_every_special_id():
  specials = make_specials(special_ids=frozenset({42}))
  assert {PAD, EOS, MASK, 42, 6, 7, 8}.issubset(specials.special_ids)
  assert set(specials.sentinel_ids).issubset(specials.special_ids)
  assert SpecialTokens(vocab_size=10, pad_id=0, eos_id=None).special_ids == {0}


def test_special_tokens_validate_ids():
  with pytest.raises(ValueError, match="mask_id=1000"):
    make_specials(mask_id=VOCAB_SIZE)
  with pytest.raises(ValueError, match=r"mode_ids\['\[NLG\]'\]"):
    make_specials(mode_ids={"[NLG]": -1})
  with pytest.raises(ValueError, match="duplicates"):
    make_specials(sentinel_ids=(998, 998))
  with pytest.raises(ValueError, match="eos_id"):
    make_objective(make_config("span_corruption"), make_specials(eos_id=None), 64)


def test_objectives_never_import_jax_tensorflow_or_torch():
  import subprocess
  import sys
  code = ("import sys, llm_jax.objectives; "
          "print(sorted({m.split('.')[0] for m in sys.modules}"
          " & {'jax', 'tensorflow', 'torch', 'flax'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=__file__.rsplit("/tests/", 1)[0])
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_objectives_survive_pickling_for_worker_processes(name):
  import pickle
  objective = objective_for(name)
  clone = pickle.loads(pickle.dumps(objective))
  tokens = random_words(np.random.default_rng(0), objective.raw_length)
  first = objective(tokens, np.random.default_rng(3))
  second = clone(tokens, np.random.default_rng(3))
  assert clone.feature_lengths == objective.feature_lengths
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
