"""The task pipeline: fields per task, SFT weights, resume, eval padding, process shards."""

import collections
import json

import numpy as np
import pytest

from llm_jax.config import base_config
from llm_jax.data import make_pipeline, make_task_pipeline, make_tokenizer
from llm_jax.data import task_pipeline

B, L = 4, 96
DECODER_FIELDS = {"inputs", "targets", "loss_weights", "input_segment_ids", "input_positions"}
ENCODER_DECODER_FIELDS = {"inputs", "input_segment_ids", "input_positions", "decoder_inputs",
                          "decoder_segment_ids", "decoder_positions", "targets", "loss_weights"}
LABELS = ("red", "green", "blue")


def _rows(n):
  for i in range(n):
    yield {"text": f"item {i} " + "x" * (i % 7), "label": LABELS[i % 3], "score": i / 4,
           "input": f"copy {i}", "target": f"{i}!", "prompt": f"Count to {i % 5}.",
           "response": " ".join(str(j) for j in range(i % 5 + 1))}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("task_rows")
  for split, n in (("train", 21), ("eval", 10)):
    (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n)))
  return str(root / "train.jsonl"), str(root / "eval.jsonl")


def _config(files, task, family="decoder", attention="causal"):
  cfg = base_config()
  cfg.task.name, cfg.model.family, cfg.model.attention = task, family, attention
  cfg.task.labels = LABELS
  cfg.task.cloze_template = "{text} is"
  cfg.task.verbalizers = (" red", " green", " blue")
  if task == "regression":
    cfg.task.label_field = "score"
  cfg.data.train_files, cfg.data.eval_files = files
  cfg.data.sequence_length = L
  cfg.train.batch_size = B
  return cfg


CASES = {
    "classification-encoder": ("classification", "encoder", "causal",
                               {"inputs", "input_segment_ids", "input_positions", "token_type_ids",
                                "targets", "loss_weights"}),
    "classification-decoder": ("classification", "decoder", "causal",
                               {"inputs", "input_segment_ids", "input_positions", "targets",
                                "loss_weights"}),
    "regression-encoder": ("regression", "encoder", "causal",
                           {"inputs", "input_segment_ids", "input_positions", "token_type_ids",
                            "targets", "loss_weights"}),
    "seq2seq-encoder_decoder": ("seq2seq", "encoder_decoder", "causal", ENCODER_DECODER_FIELDS),
    "seq2seq-causal": ("seq2seq", "decoder", "causal", DECODER_FIELDS),
    "seq2seq-prefix": ("seq2seq", "decoder", "prefix", DECODER_FIELDS | {"prefix_mask"}),
    "sft": ("sft", "decoder", "causal", DECODER_FIELDS),
    "sft-prefix": ("sft", "decoder", "prefix", DECODER_FIELDS | {"prefix_mask"}),
    "cloze": ("cloze", "decoder", "causal", DECODER_FIELDS),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fields_shapes_and_dtypes(files, case):
  task, family, attention, fields = CASES[case]
  cfg = _config(files, task, family, attention)
  batch = next(make_pipeline(cfg))
  assert set(batch) == fields
  per_row = task in ("classification", "regression")
  for key, value in batch.items():
    expected_shape = (B,) if per_row and key in ("targets", "loss_weights") else (B, L)
    assert value.shape == expected_shape, key
    float_field = key == "loss_weights" or (task == "regression" and key == "targets")
    assert value.dtype == (np.float32 if float_field else np.int32), key
  if per_row:
    assert np.all(batch["loss_weights"] == 1)
    lengths = batch["input_segment_ids"].sum(1)
    assert set(np.unique(batch["input_segment_ids"])) <= {0, 1} and np.all(lengths > 0)
    for row in range(B):
      np.testing.assert_array_equal(batch["input_positions"][row][:lengths[row]], np.arange(lengths[row]))
    if task == "classification":
      assert set(batch["targets"].tolist()) <= {0, 1, 2}
  else:
    seg = batch["decoder_segment_ids"] if family == "encoder_decoder" else batch["input_segment_ids"]
    np.testing.assert_array_equal(batch["loss_weights"] > 0, (seg > 0) & (batch["loss_weights"] > 0))
    assert seg.max() > 1  # Packed: several examples per row.
  # make_pipeline dispatches to the task pipeline.
  again = next(make_task_pipeline(cfg))
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])


def _segments(batch, row, key="input_segment_ids"):
  seg = batch[key][row]
  return [np.flatnonzero(seg == s) for s in np.unique(seg[seg > 0])]


def test_packed_sft_weights_are_the_responses(files):
  cfg = _config(files, "sft")
  tok = make_tokenizer(cfg.data)
  responses = collections.Counter(r["response"] + "</s>" for r in _rows(10))
  seen = collections.Counter()
  for batch in make_pipeline(cfg, split="eval"):
    for row in range(B):
      for where in _segments(batch, row):
        inputs, targets = batch["inputs"][row][where], batch["targets"][row][where]
        weights = batch["loss_weights"][row][where]
        assert set(weights.tolist()) <= {0.0, 1.0}
        response = tok.decode(targets[weights == 1])
        prompt = tok.decode(inputs[:np.argmax(weights)])
        assert prompt.startswith("### Instruction:\nCount to ") and prompt.endswith("### Response:")
        assert np.all(weights[np.argmax(weights):] == 1)  # Response (and eos) only at the end.
        np.testing.assert_array_equal(targets[:-1], inputs[1:])
        seen[response] += 1
  assert seen == responses


@pytest.mark.parametrize("case", ["classification-encoder", "sft", "seq2seq-encoder_decoder"])
def test_restored_state_gives_the_same_next_batches(files, case):
  task, family, attention, _ = CASES[case]
  cfg = _config(files, task, family, attention)
  it = make_pipeline(cfg)
  for _ in range(7):  # Past the first epoch of 21 rows.
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  resumed = make_pipeline(cfg)
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(4)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _texts(batches, tok):
  """The decoded texts of the real classification rows."""
  out = []
  for b in batches:
    for row in np.flatnonzero(b["loss_weights"] > 0):
      out.append(tok.decode(b["inputs"][row][b["input_segment_ids"][row] > 0]))
  return out


def test_eval_is_one_pass_with_zero_weight_padding(files):
  cfg = _config(files, "classification", "encoder")
  tok = make_tokenizer(cfg.data)
  batches = list(make_pipeline(cfg, split="eval"))
  assert len(batches) == 3  # 10 rows in batches of 4.
  last = batches[-1]
  assert last["loss_weights"].tolist() == [1, 1, 0, 0]
  assert np.all(last["input_segment_ids"][2:] == 0) and np.all(last["targets"][2:] == 0)
  assert _texts(batches, tok) == [f"[CLS]{r['text']}[SEP]" for r in _rows(10)]  # In file order.
  cfg = _config(files, "sft")
  last = list(make_pipeline(cfg, split="eval"))[-1]
  empty = (last["input_segment_ids"] == 0).all(axis=1)
  assert empty.any() and np.all(last["loss_weights"][empty] == 0)


def test_process_shards_are_disjoint_and_cover_the_rows(files):
  cfg = _config(files, "classification", "encoder")
  tok = make_tokenizer(cfg.data)
  whole = _texts(make_pipeline(cfg, split="eval"), tok)
  shards = [_texts(make_pipeline(cfg, split="eval", process_index=p, process_count=2), tok)
            for p in (0, 1)]
  assert all(b["inputs"].shape == (2, L) for b in make_pipeline(cfg, "eval", 1, 2))
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(whole) and len(whole) == 10
  train = [next(make_pipeline(cfg, process_index=p, process_count=2)) for p in (0, 1)]
  assert not set(_texts([train[0]], tok)) & set(_texts([train[1]], tok))


def test_train_split_is_shuffled_and_repeated(files):
  cfg = _config(files, "classification", "encoder")
  cfg.data.train_files = cfg.data.eval_files  # 10 rows.
  cfg.data.num_epochs = 2
  tok = make_tokenizer(cfg.data)
  texts = _texts(make_pipeline(cfg), tok)
  assert len(texts) == 20  # Whole batches only: 5 of 4.
  in_file_order = [f"[CLS]{r['text']}[SEP]" for r in _rows(10)]
  assert sorted(texts[:10]) == sorted(texts[10:]) == sorted(in_file_order)
  assert texts[:10] != in_file_order and texts[:10] != texts[10:]
  cfg.train.seed = 1
  assert _texts(make_pipeline(cfg), tok) != texts
  cfg.data.shuffle = False
  assert _texts(make_pipeline(cfg), tok)[:10] == in_file_order


def test_unpacked_rows_hold_one_example(files):
  cfg = _config(files, "seq2seq", "encoder_decoder")
  cfg.data.pack = False
  batch = next(make_pipeline(cfg))
  assert set(np.unique(batch["input_segment_ids"])) == {0, 1}
  assert set(np.unique(batch["decoder_segment_ids"])) == {0, 1}


def test_feature_lengths_and_target_length(files):
  cfg = _config(files, "seq2seq", "encoder_decoder")
  cfg.data.target_length = 8
  assert task_pipeline.task_feature_lengths(cfg) == {"inputs": L, "decoder_inputs": 8, "targets": 8,
                                                      "loss_weights": 8}
  batch = next(make_pipeline(cfg))
  assert batch["decoder_inputs"].shape == (B, 8) and batch["inputs"].shape == (B, L)
  np.testing.assert_array_equal(batch["input_segment_ids"].max(1), batch["decoder_segment_ids"].max(1))


def test_bad_rows_and_arguments(tmp_path, files):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"text": "a", "label": "red"}) + "\n" +
                 json.dumps({"text": "b", "label": "purple"}) + "\n")
  cfg = _config((str(bad), files[1]), "classification", "encoder")
  with pytest.raises(ValueError, match=rf"{bad}:2: label 'purple' .* task.labels \('red', 'green', 'blue'\)"):
    make_pipeline(cfg)
  cfg = _config(files, "classification", "encoder")
  with pytest.raises(ValueError, match="not divisible by process_count=3"):
    make_pipeline(cfg, process_count=3)
  with pytest.raises(ValueError, match="split must be"):
    make_pipeline(cfg, split="test")
  cfg = _config(files, "sft", "encoder_decoder")
  with pytest.raises(ValueError, match="task.name='sft' needs model.family"):
    make_pipeline(cfg)


def test_inspect_formats_task_rows(files):
  from llm_jax.data import inspect  # pylint: disable=g-import-not-at-top
  cfg = _config(files, "classification", "encoder")
  tok = make_tokenizer(cfg.data)
  text = inspect.format_row(next(make_pipeline(cfg, split="eval")), 0, tok)
  assert "'[CLS]item 0 [SEP]'" in text and "target        : 0" in text
  text = inspect.format_row(next(make_pipeline(_config(files, "sft"), split="eval")), 0, tok)
  assert "⟦0</s>⟧" in text
