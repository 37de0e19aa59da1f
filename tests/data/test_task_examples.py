"""Rows -> features per task: layouts, truncation, labels, templates, chat templates, cloze."""

import json
import os

import numpy as np
import pytest

from llm_jax.config import base_config
from llm_jax.data import chat_templates, cloze_candidates, generation_examples, task_examples
from llm_jax.data.byte_tokenizer import ByteTokenizer
from llm_jax.data.task_files import PROVENANCE
from llm_jax.objectives import SpecialTokens

TOK = ByteTokenizer(num_sentinels=0)
CLS, SEP, BOS, EOS = (TOK.specials.cls_id, TOK.specials.sep_id, TOK.specials.bos_id,
                      TOK.specials.eos_id)


class _FewSpecials(ByteTokenizer):
  """Bytes with only pad (and eos, if asked): like GPT-2's tokenizer, no cls / sep."""

  def __init__(self, eos: bool = True):
    super().__init__(num_sentinels=0)
    self.specials = SpecialTokens(vocab_size=self.vocab_size, pad_id=0, eos_id=1 if eos else None)


def _config(task, family="decoder", length=32, **task_fields):
  cfg = base_config()
  cfg.task.name = task
  cfg.model.family = family
  cfg.data.sequence_length = length
  for key, value in task_fields.items():
    cfg.task[key] = value
  return cfg


def _row(line=7, **fields):
  return {**fields, PROVENANCE: f"rows.jsonl:{line}"}


def _ids(text):
  return TOK.encode(text)


@pytest.mark.parametrize("len_a, len_b, budget", [(5, 3, 6), (3, 5, 6), (4, 4, 5), (9, 2, 7),
                                                  (2, 9, 7), (6, 6, 12), (10, 0, 4), (7, 7, 0)])
def test_longest_first_matches_removing_one_token_at_a_time(len_a, len_b, budget):
  a, b = len_a, len_b
  while a + b > budget:
    if a > b:
      a -= 1
    else:
      b -= 1
  assert task_examples.longest_first(len_a, len_b, budget) == (a, b)


def test_encoder_classification_layout():
  cfg = _config("classification", "encoder", length=16, labels=("neg", "pos"), text_pair_field="pair")
  f = task_examples.classification_features(cfg, TOK, _row(text="abcdefgh", pair="xyz", label="pos"))
  ids = [CLS] + _ids("abcdefgh") + [SEP] + _ids("xyz") + [SEP]
  assert f["inputs"].tolist() == ids + [0] * (16 - len(ids))
  assert f["token_type_ids"].tolist() == [0] * 10 + [1] * 4 + [0] * 2
  assert f["input_segment_ids"].tolist() == [1] * 14 + [0] * 2
  assert f["input_positions"].tolist() == list(range(14)) + [0, 0]
  assert f["targets"] == 1 and f["targets"].dtype == np.int32
  assert f["loss_weights"] == 1.0 and f["loss_weights"].dtype == np.float32
  # Too long: the longer text loses tokens from its end first.
  cfg.data.sequence_length = 10
  f = task_examples.classification_features(cfg, TOK, _row(text="abcdefgh", pair="xyz", label="neg"))
  assert f["inputs"].tolist() == [CLS] + _ids("abcd") + [SEP] + _ids("xyz") + [SEP]
  cfg.data.overflow = "error"
  with pytest.raises(ValueError, match=r"rows.jsonl:7: the text has 11 tokens, more than the 7"):
    task_examples.classification_features(cfg, TOK, _row(text="abcdefgh", pair="xyz", label="neg"))


def test_decoder_classification_keeps_the_end():
  cfg = _config("classification", "decoder", length=8, labels=("neg", "pos"))
  f = task_examples.classification_features(cfg, TOK, _row(text="abcdefghij", label="neg"))
  assert f["inputs"].tolist() == _ids("defghij") + [EOS]
  assert "token_type_ids" not in f
  cfg.task.text_pair_field = "pair"
  cfg.data.sequence_length = 12
  f = task_examples.classification_features(cfg, TOK, _row(text="ab", pair="xyz", label="neg"))
  assert f["inputs"].tolist() == _ids("ab") + [SEP] + _ids("xyz") + [EOS] + [0] * 5


def test_tokenizers_without_cls_sep_or_eos():
  cfg = _config("classification", "encoder", length=16, labels=("neg", "pos"), text_pair_field="pair")
  row = _row(text="ab", pair="cd", label="neg")
  f = task_examples.classification_features(cfg, _FewSpecials(), row)
  assert f["inputs"][:6].tolist() == _ids("ab") + [1] + _ids("cd") + [1]  # eos for [SEP], no [CLS].
  cfg.model.family = "decoder"
  f = task_examples.classification_features(cfg, _FewSpecials(), row)
  assert f["inputs"][:6].tolist() == _ids("ab\ncd") + [1]  # "\n" between the texts.
  f = task_examples.classification_features(cfg, _FewSpecials(eos=False), row)
  assert f["inputs"][:6].tolist() == _ids("ab\ncd") + [0]
  cfg = _config("sft", template="Q: {prompt}\nA: ")
  f = task_examples.TaskExamples(cfg, _FewSpecials(eos=False))(_row(prompt="hi", response="yo"))
  assert TOK.decode(f["targets"][f["loss_weights"] > 0]) == "yo"


def test_labels_by_name_and_by_id():
  cfg = _config("classification", labels=("neg", "pos"))
  assert task_examples.label_id(cfg, _row(label="pos")) == 1
  with pytest.raises(ValueError, match=r"rows.jsonl:7: label 'positive' \(field 'label'\) is not one "
                     r"of task.labels \('neg', 'pos'\)"):
    task_examples.label_id(cfg, _row(label="positive"))
  cfg = _config("classification", labels=("1", "2", "3"))
  assert task_examples.label_id(cfg, _row(label=3)) == 2  # The label's text names the class.
  cfg = _config("classification", labels=())
  cfg.model.num_labels = 3
  assert [task_examples.label_id(cfg, _row(label=v)) for v in (0, "2", 1.0)] == [0, 2, 1]
  for bad in (3, -1, "two", True, 1.5):
    with pytest.raises(ValueError, match=r"rows.jsonl:7: label .* is not an integer class id in \[0, 3\)"):
      task_examples.label_id(cfg, _row(label=bad))
  with pytest.raises(KeyError, match=r"rows.jsonl:7: no field 'label' \(task.label_field\)"):
    task_examples.label_id(cfg, _row(text="no label"))


def test_regression_targets():
  cfg = _config("regression", "encoder")
  f = task_examples.classification_features(cfg, TOK, _row(text="x", label="0.25"))
  assert f["targets"] == np.float32(0.25) and f["targets"].dtype == np.float32
  with pytest.raises(ValueError, match=r"rows.jsonl:7: regression label 'high' .* is not a number"):
    task_examples.classification_features(cfg, TOK, _row(text="x", label="high"))


def test_task_and_model_checks():
  with pytest.raises(ValueError, match="task.name='sft' needs model.family in \\('decoder',\\)"):
    task_examples.check_task(_config("sft", "encoder"))
  with pytest.raises(ValueError, match="task.labels .* or model.num_labels"):
    task_examples.check_task(_config("classification"))
  cfg = _config("classification", labels=("a", "b"))
  cfg.model.num_labels = 3
  with pytest.raises(ValueError, match="task.labels has 2 names but model.num_labels=3"):
    task_examples.check_task(cfg)
  with pytest.raises(ValueError, match="task.verbalizers"):
    task_examples.check_task(_config("cloze"))


def test_sft_weights_exactly_the_response():
  cfg = _config("sft", length=64)
  row = _row(prompt="Add 2 and 3.", response="5, of course.")
  f = task_examples.TaskExamples(cfg, TOK)(row)
  prompt = task_examples.format_template(cfg.task.template, row, "task.template")
  sequence = _ids(prompt) + _ids(row["response"]) + [EOS]
  assert f["inputs"].tolist() == sequence[:-1] and f["targets"].tolist() == sequence[1:]
  weights = f["loss_weights"]
  assert set(weights.tolist()) <= {0.0, 1.0}
  assert TOK.decode(f["targets"][weights == 1]) == row["response"] + "</s>"
  # Every target that is a prompt token has weight 0; the last prompt position predicts the response.
  assert np.all(weights[:len(_ids(prompt)) - 1] == 0) and np.all(weights[len(_ids(prompt)) - 1:] == 1)
  assert "prefix_mask" not in f
  cfg.model.attention = "prefix"
  f = task_examples.TaskExamples(cfg, TOK)(row)
  assert f["prefix_mask"].tolist() == [1] * len(_ids(prompt)) + [0] * (len(sequence) - 1 - len(_ids(prompt)))


def test_sft_truncation_and_template_errors():
  cfg = _config("sft", length=12, template="{prompt}|")
  f = task_examples.TaskExamples(cfg, TOK)(_row(prompt="abcdefghij", response="0123456789"))
  # 21 + eos tokens for 13: prompt and response keep 6 each, the prompt its end.
  assert TOK.decode(f["inputs"]) + TOK.decode(f["targets"][-1:]) == "fghij|012345</s>"
  cfg.data.overflow = "error"
  with pytest.raises(ValueError, match="rows.jsonl:7: the example has 22 tokens, more than the 13"):
    task_examples.TaskExamples(cfg, TOK)(_row(prompt="abcdefghij", response="0123456789"))
  cfg = _config("sft", template="{instruction} {context}")
  with pytest.raises(KeyError, match=r"rows.jsonl:7: no field 'context' \(used by task.template="):
    task_examples.TaskExamples(cfg, TOK)(_row(instruction="hi", response="yo"))
  with pytest.raises(ValueError, match="not a template of named row fields"):
    task_examples.format_template("{} and {}", _row(), "task.template")
  assert task_examples.template_fields("{a} {b.c} {d[0]} {a}") == ["a", "b", "d"]


def test_seq2seq_encoder_decoder_features():
  cfg = _config("seq2seq", "encoder_decoder", length=6)
  cfg.data.target_length = 4
  cfg.model.decoder_start_token_id = 0
  f = task_examples.TaskExamples(cfg, TOK)(_row(input="abcdefgh", target="xyzw"))
  assert f["inputs"].tolist() == _ids("abcde") + [EOS]
  assert f["targets"].tolist() == _ids("xyz") + [EOS]
  assert f["decoder_inputs"].tolist() == [0] + _ids("xyz")
  assert f["loss_weights"].tolist() == [1.0] * 4


def test_seq2seq_decoder_features():
  cfg = _config("seq2seq", "decoder", length=32, attention="prefix")
  cfg.model.attention = "prefix"
  f = task_examples.TaskExamples(cfg, TOK)(_row(input="abc", target="xy"))
  assert f["inputs"].tolist() == _ids("abc") + [SEP] + _ids("xy")
  assert f["targets"].tolist() == _ids("bc") + [SEP] + _ids("xy") + [EOS]
  assert f["loss_weights"].tolist() == [0, 0, 0, 1, 1, 1]
  assert f["prefix_mask"].tolist() == [1, 1, 1, 1, 0, 0]
  cfg.model.attention = "causal"
  assert "prefix_mask" not in task_examples.TaskExamples(cfg, TOK)(_row(input="abc", target="xy"))


def test_cloze_features_and_candidates():
  cfg = _config("cloze", cloze_template="Review: {text}\nSentiment:", labels=("neg", "pos"),
                verbalizers=(" bad", " good"))
  row = _row(text="Loved it", label="pos")
  f = task_examples.TaskExamples(cfg, TOK)(row)
  assert TOK.decode(f["targets"][f["loss_weights"] > 0]) == " good"
  assert TOK.decode(f["inputs"]) == "Review: Loved it\nSentiment: goo"
  prompt, candidates, label = cloze_candidates(cfg, TOK, row)
  assert TOK.decode(prompt) == "Review: Loved it\nSentiment:"
  assert [TOK.decode(c) for c in candidates] == [" bad", " good"] and label == 1
  cfg.data.sequence_length = 8  # prompt + the longest candidate fit 9 tokens.
  prompt, _, _ = cloze_candidates(cfg, TOK, row)
  assert TOK.decode(prompt) == "ent:"
  cfg.task.labels = ()
  with pytest.raises(ValueError, match=r"rows.jsonl:7: label 'pos'.*\[0, 2\) \(task.verbalizers=2"):
    cloze_candidates(cfg, TOK, row)


MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6."}]


def test_builtin_chat_template():
  cfg = _config("sft", length=128)
  renderer = chat_templates.ChatRenderer(cfg, TOK)
  text = renderer.render(MESSAGES[1:3], add_generation_prompt=False)
  assert text == "<|user|>\nWhat is 2+2?\n<|assistant|>\n4.</s>\n"
  assert renderer.render(MESSAGES[1:2], add_generation_prompt=True) == (
      "<|user|>\nWhat is 2+2?\n<|assistant|>\n")
  f = task_examples.TaskExamples(cfg, TOK)(_row(messages=MESSAGES))
  assert _weighted_spans(f) == ["4.</s>", "6.</s>"]
  assert int((f["targets"] == EOS).sum()) == 2  # '</s>' in the rendering is the eos id.


def _weighted_spans(features):
  """The decoded runs of loss-weighted targets."""
  w = features["loss_weights"] > 0
  out, start = [], None
  for i, on in enumerate(list(w) + [False]):
    if on and start is None:
      start = i
    elif not on and start is not None:
      out.append(TOK.decode(features["targets"][start:i]))
      start = None
  return out


def test_chat_template_file_and_content_spans(tmp_path):
  template = ("{% for m in messages %}{{ bos_token if loop.first }}[{{ m['role'] | upper }}] "
              "{{ m['content'] | trim }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n"
              "{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"chat_template": template, "eos_token": {"content": "</s>"}, "bos_token": "<s>"}))
  cfg = _config("sft", length=256, chat_template=str(tmp_path))
  messages = MESSAGES[:2] + [{"role": "assistant", "content": " 4. "}]
  f = task_examples.TaskExamples(cfg, TOK)(_row(messages=messages))
  assert TOK.decode(f["inputs"][:1]) == "<s>" and _weighted_spans(f) == ["4.</s>"]
  assert chat_templates.load_chat_template(str(tmp_path / "tokenizer_config.json")).source == template
  (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
  assert chat_templates.load_chat_template(str(tmp_path)).source.startswith("{% for m in messages %}{{ m")
  # A template that changes the assistant's text cannot be given loss spans by search.
  (tmp_path / "chat_template.jinja").write_text(
      "{% for m in messages %}{{ m['content'] | replace('4', 'four') }}{% endfor %}")
  with pytest.raises(ValueError, match="rows.jsonl:7: .* assistant message 2's content verbatim"):
    task_examples.TaskExamples(cfg, TOK)(_row(messages=messages))
  with pytest.raises(FileNotFoundError, match="no tokenizer_config.json"):
    chat_templates.load_chat_template(str(tmp_path / "missing"))


def test_generation_tags_mark_the_loss_spans():
  template = ("{% for m in messages %}<{{ m['role'] }}>{% if m['role'] == 'assistant' %}"
              "{% generation %}{{ m['content'] }}!{% endgeneration %}{% else %}{{ m['content'] }}"
              "{% endif %}{% endfor %}")
  text = chat_templates.render_chat(template, MESSAGES[1:3])
  assert text == "<user>What is 2+2?<assistant>4.!"
  renderer = chat_templates.ChatRenderer(_config("sft"), TOK)
  renderer.template = chat_templates.ChatTemplate(template)
  ids, weights = renderer.tokens(MESSAGES[1:3])
  assert TOK.decode(ids) == text
  assert TOK.decode([i for i, w in zip(ids, weights) if w]) == "4.!"


def test_chat_rows_as_json_strings_and_bad_messages():
  cfg = _config("sft", length=128)
  examples = task_examples.TaskExamples(cfg, TOK)
  f = examples(_row(messages=json.dumps(MESSAGES[1:3])))  # e.g. a CSV column.
  assert _weighted_spans(f) == ["4.</s>"]
  with pytest.raises(ValueError, match="rows.jsonl:7: field 'messages' .* must be a non-empty list"):
    examples(_row(messages=[{"role": "user"}]))


def test_generation_examples(tmp_path):
  path = tmp_path / "eval.jsonl"
  rows = [{"prompt": "Say hi.", "response": "hi"}, {"messages": MESSAGES}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = _config("sft", length=80)
  cfg.data.eval_files = str(path)
  (p0, ref0), (p1, ref1) = generation_examples(cfg, TOK, "eval", limit=5)
  assert TOK.decode(p0) == cfg.task.template.format(prompt="Say hi.") and ref0 == "hi"
  # The prompt keeps its end, leaving eval_max_new_tokens of the sequence for the answer.
  chat = chat_templates.ChatRenderer(cfg, TOK)
  assert p1 == chat.prompt_tokens(MESSAGES[:4])[-48:]
  assert TOK.decode(chat.prompt_tokens(MESSAGES[:4])) == chat.render(MESSAGES[:4], True)
  assert len(p1) == 80 - cfg.task.eval_max_new_tokens and ref1 == "6."
  assert generation_examples(cfg, TOK, "eval", limit=0) == []
  assert len(generation_examples(cfg, TOK, "eval", limit=1)) == 1

  path.write_text(json.dumps({"input": "abc", "target": "xyz"}) + "\n")
  cfg = _config("seq2seq", "encoder_decoder", length=64)
  cfg.data.eval_files = str(path)
  assert generation_examples(cfg, TOK, "eval", None) == [(_ids("abc") + [EOS], "xyz")]
  cfg.model.family = "decoder"
  assert generation_examples(cfg, TOK, "eval", None) == [(_ids("abc") + [SEP], "xyz")]


@pytest.mark.hf
def test_chat_template_matches_transformers(tmp_path):
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from llm_jax.data.hf_tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top

  specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
  words = "be brief what is and system user assistant".split() + list("0123456789+?.\n ")
  vocab = {t: i for i, t in enumerate(specials + words)}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[A-Za-z]+|[^A-Za-z]"),
                                                     behavior="isolated")
  tok.add_special_tokens([tokenizers.AddedToken(s, special=True) for s in specials])
  tok.save(str(tmp_path / "tokenizer.json"))
  messages = [{**m, "content": m["content"].lower()} for m in MESSAGES]
  chatml = ("{{ bos_token }}{% for message in messages %}"
            "{{ '<|im_start|>' + message['role'] + '\n' }}"
            "{% if message['role'] == 'assistant' %}{% generation %}"
            "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
            "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
  llama2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
            "{% else %}{% set loop_messages = messages %}{% set system_message = '' %}{% endif %}"
            "{% for message in loop_messages %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
            "{% if loop.index0 == 0 %}{% set content = system_message + message['content'] %}"
            "{% else %}{% set content = message['content'] %}{% endif %}"
            "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
            "{% endif %}{% endfor %}")
  for name, template in (("chatml", chatml), ("llama2", llama2), ("builtin", chat_templates.BUILTIN_CHAT_TEMPLATE)):
    folder = tmp_path / name
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", unk_token="<unk>", chat_template=template)
    hf.save_pretrained(str(folder))
    cfg = _config("sft", length=512, chat_template=str(folder))
    renderer = chat_templates.ChatRenderer(cfg, HFTokenizer(str(folder)))
    for generation_prompt in (False, True):
      for chat in (messages, messages[:4], messages[1:2]):
        expected = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)
        assert renderer.render(chat, generation_prompt) == expected, (name, chat)
        assert chat_templates.render_chat(template, chat, generation_prompt,
                                         **hf.special_tokens_map) == expected
    encoded = hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=(name == "chatml"))
    ids, weights = renderer.tokens(messages)
    assert ids == list(encoded["input_ids"]), name
    if name == "chatml":  # {% generation %} spans agree with transformers' assistant mask.
      assert [int(w) for w in weights] == list(encoded["assistant_masks"])
    prompt = hf.apply_chat_template(messages[:4], tokenize=True, add_generation_prompt=True,
                                    return_dict=True)
    assert renderer.prompt_tokens(messages[:4]) == list(prompt["input_ids"]), name
  with pytest.raises(Exception, match="Conversation roles must alternate"):
    chat_templates.render_chat(llama2, [messages[1], messages[1]], bos_token="<s>", eos_token="</s>")
  assert os.path.isfile(tmp_path / "chatml" / "tokenizer_config.json")
