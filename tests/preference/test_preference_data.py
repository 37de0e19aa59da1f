"""Preference pairs -> (chosen, rejected) rows: layout, completion-only weights, HH-RLHF
dialogues, chat rows, skipped identical pairs and counted truncation."""

import json

import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.data import make_pipeline, make_tokenizer
from llm_jax.data import preference_data
from llm_jax.data import task_files

L = 24


def _config(tmp_path, rows, name="dpo", **task):
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = name
  cfg.task.template = "Q: {prompt}\nA: "
  cfg.task.update(task)
  cfg.data.train_files = cfg.data.eval_files = str(path)
  cfg.data.sequence_length = L
  cfg.data.shuffle = False
  cfg.train.batch_size = 4
  return cfg


def _weighted_text(tokenizer, row):
  return tokenizer.decode([t for t, w in zip(row["targets"], row["loss_weights"]) if w > 0])


def test_pairs_become_consecutive_rows_with_loss_on_the_completion_only(tmp_path):
  rows = [{"prompt": "1+2", "chosen": "3", "rejected": "4"},
          {"prompt": "2+2", "chosen": "4", "rejected": "five"}]
  cfg = _config(tmp_path, rows)
  tokenizer = make_tokenizer(cfg.data)
  batch = next(make_pipeline(cfg, "eval"))
  assert batch["inputs"].shape == (4, L)
  eos = tokenizer.decode([tokenizer.specials.eos_id])
  texts = [_weighted_text(tokenizer, {k: v[i] for k, v in batch.items()}) for i in range(4)]
  assert texts == ["3" + eos, "4" + eos, "4" + eos, "five" + eos]
  first = batch["inputs"][0][:int(batch["input_segment_ids"][0].sum())]
  assert tokenizer.decode(list(first)).startswith("Q: 1+2\nA: 3")
  np.testing.assert_array_equal(batch["input_positions"][1][:5], np.arange(5))


def test_hh_rlhf_dialogues_split_at_the_last_shared_assistant_turn():
  chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 4"
  rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 5, surely"
  prompt, c, r = preference_data.split_hh_dialogues(chosen, rejected)
  assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant:"
  assert (c, r) == (" 4", " 5, surely")
  # Completions that differ from their first character still split at the last shared turn.
  prompt, c, r = preference_data.split_hh_dialogues("\n\nHuman: a\n\nAssistant: Ab",
                                                    "\n\nHuman: a\n\nAssistant: Ac")
  assert (prompt, c, r) == ("\n\nHuman: a\n\nAssistant:", " Ab", " Ac")


def test_hh_rlhf_format_and_chat_rows(tmp_path):
  rows = [{"chosen": "\n\nHuman: 1+1?\n\nAssistant: 2", "rejected": "\n\nHuman: 1+1?\n\nAssistant: 3"}]
  cfg = _config(tmp_path, rows * 2, preference_format="hh_rlhf")
  tokenizer = make_tokenizer(cfg.data)
  batch = next(make_pipeline(cfg, "eval"))
  eos = tokenizer.decode([tokenizer.specials.eos_id])
  assert _weighted_text(tokenizer, {k: v[0] for k, v in batch.items()}) == " 2" + eos
  chat = [{"prompt": [{"role": "user", "content": "1+1?"}],
           "chosen": [{"role": "assistant", "content": "2"}], "rejected": "3"}]
  cfg = _config(tmp_path, chat * 2, sequence_length=64)
  cfg.data.sequence_length = 64
  batch = next(make_pipeline(cfg, "eval"))
  texts = [_weighted_text(tokenizer, {k: v[i] for k, v in batch.items()}) for i in (0, 1)]
  assert texts == ["2" + eos, "3" + eos]


def test_identical_pairs_are_skipped_and_truncation_is_counted(tmp_path):
  rows = [{"prompt": "a", "chosen": "same", "rejected": "same"},
          {"prompt": "b", "chosen": "x" * 60, "rejected": "y"},
          {"prompt": "c", "chosen": "ok", "rejected": "no"}]
  cfg = _config(tmp_path, rows)
  tokenizer = make_tokenizer(cfg.data)
  rows = task_files.read_task_rows(cfg, "train")
  kept, stats = preference_data.usable_rows(cfg, tokenizer, rows, "train")
  assert kept == [1, 2]
  assert (stats.pairs, stats.identical, stats.truncated) == (2, 1, 1)
  features = preference_data.PreferenceExamples(cfg, tokenizer)(rows[1])
  assert features["input_segment_ids"][0].sum() == L  # cut to the context
  assert features["loss_weights"][0][-1] == 1.0  # the completion's eos survives the cut
  cfg.data.overflow = "error"
  with pytest.raises(ValueError, match="pairs.jsonl:2: prompt \\+ completion have"):
    preference_data.usable_rows(cfg, tokenizer, rows, "train")


def test_bad_settings_name_the_field(tmp_path):
  rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}]
  cfg = _config(tmp_path, rows, name="reward_model")
  with pytest.raises(ValueError, match="model.num_labels=1"):
    preference_data.check_preference_task(cfg)
  cfg = _config(tmp_path, rows)
  cfg.train.batch_size = 3
  with pytest.raises(ValueError, match="train.batch_size=3 must be even"):
    preference_data.check_preference_task(cfg)
  cfg = _config(tmp_path, [{"prompt": "a", "chosen": "b"}])
  with pytest.raises(KeyError, match="task.rejected_field"):
    next(make_pipeline(cfg, "eval"))
