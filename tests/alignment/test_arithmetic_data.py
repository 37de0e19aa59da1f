"""The generated arithmetic task: seeded problems, disjoint splits, SFT rows, exact match."""

import json

import pytest

from llm_jax.data import arithmetic


def test_problems_are_correct_and_seeded():
  problems = arithmetic.make_problems(50, seed=3, max_operand=20, operators="+-*")
  assert problems == arithmetic.make_problems(50, seed=3, max_operand=20, operators="+-*")
  assert problems != arithmetic.make_problems(50, seed=4, max_operand=20, operators="+-*")
  for p in problems:
    expression = p["prompt"]
    assert expression.endswith("=")
    assert int(p["answer"]) == eval(expression[:-1])  # pylint: disable=eval-used
    a, b = (int(x) for x in expression[:-1].replace("*", "+").replace("-", "+").split("+"))
    assert 0 <= a <= 20 and 0 <= b <= 20


def test_train_and_held_out_never_overlap():
  train, held_out = arithmetic.train_and_held_out(3000, 200, seed=0, max_operand=30)
  assert len(train) == 3000 and len(held_out) == 200
  assert len({p["prompt"] for p in held_out}) == 200
  assert not {p["prompt"] for p in train} & {p["prompt"] for p in held_out}
  assert arithmetic.train_and_held_out(10, 200, seed=0, max_operand=30)[1] == held_out
  with pytest.raises(ValueError, match="num_held_out"):
    arithmetic.train_and_held_out(10, 10_000, seed=0, max_operand=5)
  with pytest.raises(ValueError, match="operators"):
    arithmetic.make_problems(3, seed=0, operators="/")


def test_exact_match():
  assert arithmetic.exact_match("19", "19") == 1.0
  assert arithmetic.exact_match(" 19 \nmore text", "19") == 1.0
  assert arithmetic.exact_match("190", "19") == 0.0
  assert arithmetic.exact_match("", "19") == 0.0


def test_sft_rows_train_the_answer_then_eos(tmp_path):
  from llm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from llm_jax import data  # pylint: disable=g-import-not-at-top
  from llm_jax.data import task_examples  # pylint: disable=g-import-not-at-top
  path = arithmetic.write_sft_jsonl(str(tmp_path / "sft.jsonl"), [
      {"prompt": "12+7=", "answer": "19"}])
  row = json.loads(open(path).read())
  assert row == {"prompt": "12+7=", "response": "19", "answer": "19"}
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.update(name="sft", template="{prompt}")
  cfg.data.sequence_length = 16
  tokenizer = data.make_tokenizer(cfg.data)
  features = task_examples.SftExamples(cfg, tokenizer)(row)
  targets = [int(t) for t, w in zip(features["targets"], features["loss_weights"]) if w]
  assert targets == tokenizer.encode("19") + [tokenizer.specials.eos_id]
