"""One task row -> one example's features: labels, templates, chat templates, truncation.

Layouts (L = data.sequence_length, Ld = data.target_length or L):

classification / regression, one example per row, right-padded to L (never packed):
  encoder: [CLS] text [SEP] (text_pair [SEP]), with bos / eos where the tokenizer lacks cls / sep
    (and nothing where it lacks both); token_type_ids 0 up to the first [SEP], 1 after. Too
    long: tokens are cut from the END of the longer text first (HF's 'longest_first').
  decoder: text (+ separator + text_pair) + eos, the separator being [SEP] if the tokenizer has
    one, else the encoding of "\\n". Too long: tokens are cut from the START of the longer text,
    so the ends and the eos survive; a last-token head reads position sum(input_segment_ids) - 1.
  targets: the class id (int32) or the regression value (float32); loss_weights 1.0.

decoder rows (seq2seq on a decoder, sft, cloze) are one token sequence s = prompt + target:
  inputs = s[:-1], targets = s[1:] (next-token, as objectives/causal.py), loss_weights 1 where the
  target token belongs to the target part, prefix_mask 1 on the prompt's positions (only with
  model.attention='prefix'). At most L + 1 tokens: the longer of prompt and target is cut first,
  the prompt from its start, the target from its end (its eos is kept: trim, then append).
  seq2seq: prompt = input + [SEP] (else eos, else nothing), target = target + eos.
  sft:     prompt = task.template.format(**row), target = response + eos.
  cloze:   prompt = task.cloze_template.format(**row), target = task.verbalizers[label] (no eos).
seq2seq on an encoder_decoder: inputs = input[:Le - 1] + eos, targets = target[:Ld - 1] + eos,
  decoder_inputs = targets shifted right from model.decoder_start_token_id, loss on all targets.

Chat rows (the row has task.messages_field, a list of {"role", "content"}) are rendered and
tokenized by chat_templates.ChatRenderer, loss on the assistant spans.
"""

import functools
import json
import re
import string
from typing import Callable

import ml_collections
import numpy as np

from llm_jax.data import task_files
from llm_jax.data.chat_templates import ChatRenderer
from llm_jax.data.task_files import require_field, where
from llm_jax.objectives import base as objective_base

TASK_FAMILIES = {
    "classification": ("encoder", "decoder"),
    "regression": ("encoder", "decoder"),
    "seq2seq": ("encoder_decoder", "decoder"),
    "sft": ("decoder",),
    "cloze": ("decoder",),
}
PACKABLE_TASKS = ("seq2seq", "sft", "cloze")

# ---------------------------------------------------------------------------- config checks


def check_task(cfg: ml_collections.ConfigDict) -> str:
  """Checks the task / model combination and label settings; returns the task name."""
  task, name, family = cfg.task, cfg.task.name, cfg.model.family
  if name not in TASK_FAMILIES:
    raise ValueError(f"task.name={name!r} has no task data pipeline; expected one of "
                     f"{tuple(TASK_FAMILIES)}")
  if family not in TASK_FAMILIES[name]:
    raise ValueError(f"task.name={name!r} needs model.family in {TASK_FAMILIES[name]}, "
                     f"got {family!r}")
  labels, num_labels = tuple(task.labels), cfg.model.num_labels
  if name == "classification":
    if not labels and num_labels <= 0:
      raise ValueError("task.name='classification' needs task.labels (class names) or "
                       "model.num_labels > 0 (integer labels)")
    if labels and num_labels > 0 and len(labels) != num_labels:
      raise ValueError(f"task.labels has {len(labels)} names but model.num_labels={num_labels}")
  if name == "cloze":
    if not task.verbalizers:
      raise ValueError("task.name='cloze' needs task.verbalizers (one string per label)")
    if labels and len(labels) != len(task.verbalizers):
      raise ValueError(f"task.labels has {len(labels)} names but task.verbalizers has "
                       f"{len(task.verbalizers)}")
  return name


def num_classes(cfg: ml_collections.ConfigDict) -> int:
  """len(task.labels), else len(task.verbalizers) for cloze, else model.num_labels."""
  if cfg.task.labels:
    return len(cfg.task.labels)
  if cfg.task.name == "cloze":
    return len(cfg.task.verbalizers)
  return cfg.model.num_labels


# ---------------------------------------------------------------------------- fields and labels


def label_id(cfg: ml_collections.ConfigDict, row: dict) -> int:
  """The row's class id: its label's index in task.labels, or (labels=()) an integer id."""
  task = cfg.task
  value = require_field(row, task.label_field, "task.label_field")
  labels = tuple(task.labels)
  if labels:
    key = value if isinstance(value, str) else str(value)
    if key not in labels:
      hint = ("; integer class ids need task.labels=() (and model.num_labels)"
              if isinstance(value, int) else "")
      raise ValueError(f"{where(row)}: label {value!r} (field {task.label_field!r}) is not one of "
                       f"task.labels {labels}{hint}")
    return labels.index(key)
  n = num_classes(cfg)
  source = "task.verbalizers" if task.name == "cloze" else "model.num_labels"
  class_id = None
  if isinstance(value, int) and not isinstance(value, bool):
    class_id = value
  elif isinstance(value, float) and value.is_integer():
    class_id = int(value)
  elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
    class_id = int(value)
  if class_id is None or not 0 <= class_id < n:
    raise ValueError(f"{where(row)}: label {value!r} (field {task.label_field!r}) is not an integer "
                     f"class id in [0, {n}) ({source}={n}; task.labels is empty)")
  return class_id


def regression_target(cfg: ml_collections.ConfigDict, row: dict) -> float:
  value = require_field(row, cfg.task.label_field, "task.label_field")
  try:
    if isinstance(value, bool):
      raise ValueError
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where(row)}: regression label {value!r} (field {cfg.task.label_field!r}) "
                     "is not a number") from None


class _RowFields(dict):

  def __init__(self, row: dict, config_field: str, template: str):
    super().__init__(row)
    self._row, self._config_field, self._template = row, config_field, template

  def __missing__(self, key):
    raise task_files.missing_field(self._row, key, f"used by {self._config_field}={self._template!r}")


def format_template(template: str, row: dict, config_field: str) -> str:
  """template.format(**row); a missing field names the row's file:line and the template."""
  try:
    return template.format_map(_RowFields(row, config_field, template))
  except (IndexError, ValueError) as e:
    raise ValueError(f"{config_field}={template!r} is not a template of named row fields "
                     f"(str.format: {e})") from None


def template_fields(template: str) -> list[str]:
  """The row fields a str.format template reads."""
  fields = []
  for _, name, _, _ in string.Formatter().parse(template):
    if name:
      root = re.split(r"[.\[]", name, maxsplit=1)[0]
      if root not in fields:
        fields.append(root)
  return fields


def _text(row: dict, field: str, config_field: str) -> str:
  value = require_field(row, field, config_field)
  return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------- truncation


def longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
  """Kept lengths when tokens are removed one at a time from the longer of a and b (b on ties),
  until len_a + len_b <= budget: HF's truncation='longest_first'."""
  if budget < 0:
    raise ValueError(f"no room for any text: {budget} tokens left after the special tokens "
                     "(data.sequence_length is too small)")
  excess = len_a + len_b - budget
  if excess <= 0:
    return len_a, len_b
  longer, shorter = max(len_a, len_b), min(len_a, len_b)
  if longer - excess >= shorter:  # Only the longer one is cut.
    return (len_a - excess, len_b) if len_a > len_b else (len_a, len_b - excess)
  return (budget + 1) // 2, budget // 2


def _overflow_check(cfg, row, total: int, limit: int, what: str = "the example"):
  if total > limit and cfg.data.overflow == "error":
    raise ValueError(f"{where(row)}: {what} has {total} tokens, more than the {limit} that fit "
                     f"(data.sequence_length={cfg.data.sequence_length}, data.target_length="
                     f"{cfg.data.target_length}; data.overflow='error', use 'truncate')")


# ---------------------------------------------------------------------------- classification


def _padded(ids: list[int], length: int, pad_id: int, token_types: list[int] | None):
  n = len(ids)
  out = {
      "inputs": np.full(length, pad_id, np.int32),
      "input_segment_ids": np.zeros(length, np.int32),
      "input_positions": np.zeros(length, np.int32),
  }
  out["inputs"][:n] = ids
  out["input_segment_ids"][:n] = 1
  out["input_positions"][:n] = np.arange(n)
  if token_types is not None:
    out["token_type_ids"] = np.zeros(length, np.int32)
    out["token_type_ids"][:n] = token_types
  return out


def classification_tokens(cfg: ml_collections.ConfigDict, tokenizer, row: dict
                          ) -> tuple[list[int], list[int]]:
  """(token ids, token type ids) of a classification / regression row, unpadded (see the module doc)."""
  task, specials, length = cfg.task, tokenizer.specials, cfg.data.sequence_length
  a = tokenizer.encode(_text(row, task.text_field, "task.text_field"))
  b = (tokenizer.encode(_text(row, task.text_pair_field, "task.text_pair_field"))
       if task.text_pair_field else None)
  len_b = 0 if b is None else len(b)
  if cfg.model.family == "encoder":
    start = specials.cls_id if specials.cls_id is not None else specials.bos_id
    sep = specials.sep_id if specials.sep_id is not None else specials.eos_id
    head = [] if start is None else [start]
    tail = [] if sep is None else [sep]
    budget = length - len(head) - len(tail) * (1 if b is None else 2)
    ka, kb = longest_first(len(a), len_b, budget)
    _overflow_check(cfg, row, len(a) + len_b, budget, "the text")
    first = head + a[:ka] + tail
    second = [] if b is None else b[:kb] + tail
    return first + second, [0] * len(first) + [1] * len(second)
  sep = ([specials.sep_id] if specials.sep_id is not None else tokenizer.encode("\n")) if b is not None else []
  eos = [] if specials.eos_id is None else [specials.eos_id]
  budget = length - len(sep) - len(eos)
  ka, kb = longest_first(len(a), len_b, budget)
  _overflow_check(cfg, row, len(a) + len_b, budget, "the text")
  ids = a[len(a) - ka:] + sep + ([] if b is None else b[len_b - kb:]) + eos
  return ids, [0] * len(ids)


def classification_features(cfg: ml_collections.ConfigDict, tokenizer, row: dict
                            ) -> dict[str, np.ndarray]:
  """inputs, input_segment_ids, input_positions [L] (+ token_type_ids for encoders), targets and
  loss_weights scalars: class id int32 (classification) or float32 value (regression)."""
  ids, types = classification_tokens(cfg, tokenizer, row)
  if not ids:
    raise ValueError(f"{where(row)}: the example has no tokens")
  out = _padded(ids, cfg.data.sequence_length, tokenizer.specials.pad_id,
                types if cfg.model.family == "encoder" else None)
  if cfg.task.name == "regression":
    out["targets"] = np.float32(regression_target(cfg, row))
  else:
    out["targets"] = np.int32(label_id(cfg, row))
  out["loss_weights"] = np.float32(1.0)
  return out


# ---------------------------------------------------------------------------- decoder rows


def decoder_features(tokens: list[int], weights: list[float], prefix_length: int | None,
                     name: str = "an example") -> dict[str, np.ndarray]:
  """Next-token features of one token sequence whose token i has loss weight weights[i]."""
  if len(tokens) < 2:
    raise ValueError(f"{name}: a decoder example needs at least 2 tokens, got {len(tokens)}")
  tokens = np.asarray(tokens, np.int32)
  out = {
      "inputs": tokens[:-1],
      "targets": tokens[1:],
      "loss_weights": np.asarray(weights[1:], np.float32),
  }
  if prefix_length is not None:
    out["prefix_mask"] = (np.arange(len(tokens) - 1) < prefix_length).astype(np.int32)
  return out


def _prompt_target_features(cfg, row, prompt: list[int], target: list[int], eos: list[int]):
  budget = cfg.data.sequence_length + 1 - len(eos)
  kp, kt = longest_first(len(prompt), len(target), budget)
  _overflow_check(cfg, row, len(prompt) + len(target) + len(eos), budget + len(eos))
  prompt, target = prompt[len(prompt) - kp:], target[:kt] + eos
  prefix = kp if cfg.model.attention == "prefix" else None
  return decoder_features(prompt + target, [0.0] * kp + [1.0] * len(target), prefix, where(row))


def _eos(tokenizer) -> list[int]:
  return [] if tokenizer.specials.eos_id is None else [tokenizer.specials.eos_id]


def _seq2seq_separator(tokenizer) -> list[int]:
  specials = tokenizer.specials
  if specials.sep_id is not None:
    return [specials.sep_id]
  return _eos(tokenizer)


def seq2seq_features(cfg: ml_collections.ConfigDict, tokenizer, row: dict) -> dict[str, np.ndarray]:
  """Unpadded seq2seq features: encoder-decoder or decoder-only layout (see the module doc)."""
  task = cfg.task
  source = tokenizer.encode(_text(row, task.input_field, "task.input_field"))
  target = tokenizer.encode(_text(row, task.target_field, "task.target_field"))
  eos = _eos(tokenizer)
  if cfg.model.family != "encoder_decoder":
    return _prompt_target_features(cfg, row, source + _seq2seq_separator(tokenizer), target, eos)
  input_length = cfg.data.sequence_length
  target_length = cfg.data.target_length or input_length
  _overflow_check(cfg, row, len(source) + len(eos), input_length, "the input")
  _overflow_check(cfg, row, len(target) + len(eos), target_length, "the target")
  inputs = source[:input_length - len(eos)] + eos
  targets = target[:target_length - len(eos)] + eos
  if not inputs or not targets:
    raise ValueError(f"{where(row)}: empty input or target (and the tokenizer has no eos)")
  return objective_base.seq2seq_features(inputs, targets, cfg.model.decoder_start_token_id)


def cloze_features(cfg: ml_collections.ConfigDict, tokenizer, row: dict) -> dict[str, np.ndarray]:
  """Decoder features: the cloze prompt, then the label's verbalizer in the loss."""
  prompt = tokenizer.encode(format_template(cfg.task.cloze_template, row, "task.cloze_template"))
  label = label_id(cfg, row)
  verbalizer = tokenizer.encode(cfg.task.verbalizers[label])
  if not verbalizer:
    raise ValueError(f"task.verbalizers[{label}]={cfg.task.verbalizers[label]!r} encodes to no tokens")
  return _prompt_target_features(cfg, row, prompt, verbalizer, [])


def cloze_candidates(cfg: ml_collections.ConfigDict, tokenizer, row: dict
                     ) -> tuple[list[int], list[list[int]], int]:
  """(prompt ids, one id list per verbalizer, the row's label id) for scoring-based evaluation.

  The prompt is cut from its start so that prompt + any candidate fits L + 1 tokens (L inputs).
  """
  check_task(cfg)
  prompt = tokenizer.encode(format_template(cfg.task.cloze_template, row, "task.cloze_template"))
  candidates = [tokenizer.encode(v) for v in cfg.task.verbalizers]
  room = max(1, cfg.data.sequence_length + 1 - max(len(c) for c in candidates))
  return prompt[max(0, len(prompt) - room):], candidates, label_id(cfg, row)


def check_messages(row: dict, field: str) -> list[dict]:
  """row[field] as a list of {"role", "content"} messages (a JSON string of one is parsed)."""
  messages = row[field]
  if isinstance(messages, str):
    try:
      messages = json.loads(messages)
    except json.JSONDecodeError:
      pass
  if not isinstance(messages, list) or not messages or not all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in messages):
    raise ValueError(f"{where(row)}: field {field!r} (task.messages_field) must be a non-empty list "
                     'of {"role": str, "content": str}')
  return messages


def is_chat_row(cfg: ml_collections.ConfigDict, row: dict) -> bool:
  return bool(cfg.task.messages_field) and row.get(cfg.task.messages_field) is not None


# ---------------------------------------------------------------------------- sft


class SftExamples:
  """Rows -> decoder features: prompt/response rows via task.template, chat rows via a template."""

  def __init__(self, cfg: ml_collections.ConfigDict, tokenizer):
    self._cfg, self._tokenizer = cfg, tokenizer
    self._chat = None

  @property
  def chat(self) -> ChatRenderer:
    if self._chat is None:
      self._chat = ChatRenderer(self._cfg, self._tokenizer)
    return self._chat

  def __call__(self, row: dict) -> dict[str, np.ndarray]:
    cfg, tokenizer = self._cfg, self._tokenizer
    if is_chat_row(cfg, row):
      ids, weights = self.chat.tokens(check_messages(row, cfg.task.messages_field), where(row))
      length = cfg.data.sequence_length + 1
      _overflow_check(cfg, row, len(ids), length, "the conversation")
      ids, weights = ids[:length], weights[:length]
      prefix = None
      if cfg.model.attention == "prefix":
        prefix = next((i for i, w in enumerate(weights) if w > 0), len(weights))
      return decoder_features(ids, weights, prefix, where(row))
    prompt = tokenizer.encode(format_template(cfg.task.template, row, "task.template"))
    response = tokenizer.encode(_text(row, cfg.task.response_field, "task.response_field"))
    return _prompt_target_features(cfg, row, prompt, response, _eos(tokenizer))


# ---------------------------------------------------------------------------- generation


def generation_prompt(cfg: ml_collections.ConfigDict, tokenizer, row: dict,
                      chat: ChatRenderer | None = None) -> tuple[list[int], str]:
  """(prompt ids, reference text) of a seq2seq or sft row for evaluation by generation.

  Encoder-decoder: the encoder input ids (input[:L - 1] + eos). Decoders: the rendered prompt
  (seq2seq: input + separator; sft: task.template, or the chat up to its last assistant message
  with add_generation_prompt=True), cut from its start to L - task.eval_max_new_tokens tokens
  (at least 1) so that the generated tokens fit.
  """
  task = cfg.task
  length = cfg.data.sequence_length
  if task.name == "seq2seq":
    source = tokenizer.encode(_text(row, task.input_field, "task.input_field"))
    reference = _text(row, task.target_field, "task.target_field")
    if cfg.model.family == "encoder_decoder":
      eos = _eos(tokenizer)
      return source[:length - len(eos)] + eos, reference
    prompt = source + _seq2seq_separator(tokenizer)
  elif task.name == "sft":
    if is_chat_row(cfg, row):
      messages = check_messages(row, task.messages_field)
      last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
      if last is None:
        raise ValueError(f"{where(row)}: a chat row for generation needs an assistant message")
      chat = chat or ChatRenderer(cfg, tokenizer)
      prompt, reference = chat.prompt_tokens(messages[:last]), messages[last]["content"]
    else:
      prompt = tokenizer.encode(format_template(task.template, row, "task.template"))
      reference = _text(row, task.response_field, "task.response_field")
  else:
    raise ValueError(f"generation examples are for task.name 'seq2seq' or 'sft', got {task.name!r}")
  room = max(1, length - task.eval_max_new_tokens)
  return prompt[max(0, len(prompt) - room):], reference


def generation_examples(cfg: ml_collections.ConfigDict, tokenizer, split: str = "eval",
                        limit: int | None = None) -> list[tuple[list[int], str]]:
  """(prompt ids, reference) of the first `limit` rows of `split` (None: all; 0: none)."""
  check_task(cfg)
  if limit is not None and limit <= 0:
    return []
  rows = task_files.read_task_rows(cfg, split)
  count = len(rows) if limit is None else min(limit, len(rows))
  chat = ChatRenderer(cfg, tokenizer) if cfg.task.name == "sft" else None
  return [generation_prompt(cfg, tokenizer, rows[i], chat) for i in range(count)]


# ---------------------------------------------------------------------------- dispatch


class TaskExamples:
  """row -> the features of cfg.task.name (picklable, for grain workers)."""

  def __init__(self, cfg: ml_collections.ConfigDict, tokenizer):
    self.name = check_task(cfg)
    self._cfg, self._tokenizer = cfg, tokenizer
    self._fn: Callable[[dict], dict[str, np.ndarray]] = {
        "classification": functools.partial(classification_features, cfg, tokenizer),
        "regression": functools.partial(classification_features, cfg, tokenizer),
        "seq2seq": functools.partial(seq2seq_features, cfg, tokenizer),
        "cloze": functools.partial(cloze_features, cfg, tokenizer),
        "sft": SftExamples(cfg, tokenizer),
    }[self.name]

  def __call__(self, row: dict) -> dict[str, np.ndarray]:
    return self._fn(row)

  def check_row(self, row: dict) -> None:
    """Fails fast on a missing field or a bad label, without tokenizing."""
    cfg, task = self._cfg, self._cfg.task
    if self.name in ("classification", "regression"):
      require_field(row, task.text_field, "task.text_field")
      if task.text_pair_field:
        require_field(row, task.text_pair_field, "task.text_pair_field")
    if self.name == "classification" or self.name == "cloze":
      label_id(cfg, row)
    if self.name == "regression":
      regression_target(cfg, row)
    if self.name == "cloze":
      format_template(task.cloze_template, row, "task.cloze_template")
    if self.name == "seq2seq":
      require_field(row, task.input_field, "task.input_field")
      require_field(row, task.target_field, "task.target_field")
    if self.name == "sft":
      if is_chat_row(cfg, row):
        check_messages(row, task.messages_field)
      else:
        format_template(task.template, row, "task.template")
        require_field(row, task.response_field, "task.response_field")
