"""Preference pairs -> batches of (chosen, rejected) rows for reward models and the DPO family.

A row holds a prompt and two completions (task.prompt_field, task.chosen_field,
task.rejected_field):
  strings:  the prompt is rendered with task.template (as SFT), each completion + eos follows it;
  chat:     the prompt is a list of messages and each completion a list of assistant messages
            (or one string: one assistant message), rendered with the chat template;
  hh_rlhf:  (task.preference_format) chosen and rejected are whole dialogues
            ("\\n\\nHuman: ... \\n\\nAssistant: ...") whose shared beginning up to the last
            "\\n\\nAssistant:" is the prompt, as in Anthropic's HH-RLHF.

Each pair becomes two right-padded rows [2, L] (inputs, targets, loss_weights on the completion's
tokens only, input_segment_ids, input_positions), so a batch of train.batch_size rows holds
train.batch_size / 2 pairs, chosen at even rows. A sequence longer than L + 1 tokens is cut as
SFT rows are (the longer of prompt and completion first; data.overflow='error' refuses it); a
pair whose completions are identical teaches nothing and is skipped. Both are counted and
logged when the rows are read. `reference_logps` ([N, 2] per row of the split, from a first
pass, see training/reference_pass.py) adds that field to each pair.
"""

import dataclasses
import os

from absl import logging
import grain
import ml_collections
import numpy as np

from llm_jax.data import pipeline
from llm_jax.data import task_files
from llm_jax.data import task_examples
from llm_jax.data.chat_templates import ChatRenderer
from llm_jax.data.tokenizer import Tokenizer, make_tokenizer

PREFERENCE_TASKS = ("reward_model", "dpo", "ipo", "simpo", "orpo")
FORMATS = ("pairs", "hh_rlhf")
HH_ASSISTANT = "\n\nAssistant:"


@dataclasses.dataclass(frozen=True)
class Pair:
  prompt: list[int]
  chosen: list[int]  # completion tokens (eos included)
  rejected: list[int]
  chosen_weights: list[float] | None = None  # None: 1 on every completion token
  rejected_weights: list[float] | None = None


def split_hh_dialogues(chosen: str, rejected: str) -> tuple[str, str, str]:
  """(prompt, chosen completion, rejected completion) of two dialogues sharing their prompt."""
  common = 0
  for a, b in zip(chosen, rejected):
    if a != b:
      break
    common += 1
  cut = chosen.rfind(HH_ASSISTANT, 0, common)
  cut = common if cut < 0 else cut + len(HH_ASSISTANT)
  return chosen[:cut], chosen[cut:], rejected[cut:]


def _assistant_messages(value, row, field) -> list[dict]:
  if isinstance(value, str):
    return [{"role": "assistant", "content": value}]
  return task_examples.check_messages({**row, field: value}, field)


class PreferenceExamples:
  """row -> Pair -> features of shape [2, L]."""

  def __init__(self, cfg: ml_collections.ConfigDict, tokenizer):
    check_preference_task(cfg)
    self._cfg, self._tokenizer = cfg, tokenizer
    self._chat = None
    eos = tokenizer.specials.eos_id
    self._eos = [] if eos is None else [eos]

  def pair(self, row: dict) -> Pair:
    task, tokenizer = self._cfg.task, self._tokenizer
    chosen = task_files.require_field(row, task.chosen_field, "task.chosen_field")
    rejected = task_files.require_field(row, task.rejected_field, "task.rejected_field")
    if task.preference_format == "hh_rlhf":
      prompt, chosen, rejected = split_hh_dialogues(str(chosen), str(rejected))
      return Pair(tokenizer.encode(prompt), tokenizer.encode(chosen) + self._eos,
                  tokenizer.encode(rejected) + self._eos)
    prompt = row.get(task.prompt_field)
    if isinstance(prompt, list) or isinstance(chosen, list):
      return self._chat_pair(row, prompt or [], chosen, rejected)
    prompt_ids = tokenizer.encode(task_examples.format_template(task.template, row, "task.template"))
    return Pair(prompt_ids, tokenizer.encode(str(chosen)) + self._eos,
                tokenizer.encode(str(rejected)) + self._eos)

  def _chat_pair(self, row, prompt, chosen, rejected) -> Pair:
    if self._chat is None:
      self._chat = ChatRenderer(self._cfg, self._tokenizer)
    name = task_files.where(row)
    prompt = task_examples.check_messages({**row, "prompt": prompt}, "prompt") if prompt else []
    prompt_ids = self._chat.prompt_tokens(prompt) if prompt else []
    completions = []
    for field, value in ((self._cfg.task.chosen_field, chosen),
                         (self._cfg.task.rejected_field, rejected)):
      ids, weights = self._chat.tokens(prompt + _assistant_messages(value, row, field), name)
      if ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError(f"{name}: the chat template renders the prompt differently with the "
                         f"{field!r} completion after it; cannot separate the completion")
      completions.append((ids[len(prompt_ids):], weights[len(prompt_ids):]))
    (c_ids, c_w), (r_ids, r_w) = completions
    return Pair(prompt_ids, c_ids, r_ids, c_w, r_w)

  def features(self, pair: Pair, row: dict) -> tuple[dict[str, np.ndarray], bool]:
    """([2, L] features, whether a sequence was truncated)."""
    length = self._cfg.data.sequence_length
    rows, truncated = [], False
    for completion, weights in ((pair.chosen, pair.chosen_weights),
                                (pair.rejected, pair.rejected_weights)):
      tokens, token_weights, cut = self._sequence(pair.prompt, completion, weights, row)
      truncated |= cut
      rows.append(_padded_row(tokens, token_weights, length, self._tokenizer.specials.pad_id))
    return {k: np.stack([rows[0][k], rows[1][k]]) for k in rows[0]}, truncated

  def _sequence(self, prompt, completion, weights, row):
    """prompt + completion cut to L + 1 tokens as SFT rows: (tokens, weights, truncated)."""
    budget = self._cfg.data.sequence_length + 1
    weights = [1.0] * len(completion) if weights is None else list(weights)
    total = len(prompt) + len(completion)
    if total > budget and self._cfg.data.overflow == "error":
      raise ValueError(f"{task_files.where(row)}: prompt + completion have {total} tokens, more "
                       f"than the {budget} that fit (data.sequence_length + 1; data.overflow="
                       "'error', use 'truncate')")
    eos = self._eos if completion[-len(self._eos):] == self._eos else []
    body, body_weights = completion[:len(completion) - len(eos)], weights[:len(weights) - len(eos)]
    kept_prompt, kept_body = task_examples.longest_first(len(prompt), len(body),
                                                         budget - len(eos))
    tokens = prompt[len(prompt) - kept_prompt:] + body[:kept_body] + eos
    token_weights = [0.0] * kept_prompt + body_weights[:kept_body] + [1.0] * len(eos)
    return tokens, token_weights, total > budget

  def __call__(self, row: dict) -> dict[str, np.ndarray]:
    return self.features(self.pair(row), row)[0]


def _padded_row(tokens, weights, length, pad_id) -> dict[str, np.ndarray]:
  n = len(tokens) - 1
  row = {
      "inputs": np.full(length, pad_id, np.int32),
      "targets": np.full(length, pad_id, np.int32),
      "loss_weights": np.zeros(length, np.float32),
      "input_segment_ids": np.zeros(length, np.int32),
      "input_positions": np.zeros(length, np.int32),
  }
  if n < 1:
    return row
  row["inputs"][:n] = tokens[:-1]
  row["targets"][:n] = tokens[1:]
  row["loss_weights"][:n] = weights[1:]
  row["input_segment_ids"][:n] = 1
  row["input_positions"][:n] = np.arange(n)
  return row


def check_preference_task(cfg: ml_collections.ConfigDict) -> None:
  task = cfg.task
  if task.name not in PREFERENCE_TASKS:
    raise ValueError(f"task.name={task.name!r} is not a preference task {PREFERENCE_TASKS}")
  if cfg.model.family != "decoder":
    raise ValueError(f"task.name={task.name!r} needs model.family='decoder', got "
                     f"{cfg.model.family!r}")
  if task.preference_format not in FORMATS:
    raise ValueError(f"task.preference_format={task.preference_format!r}: expected one of {FORMATS}")
  if task.name == "reward_model" and cfg.model.num_labels != 1:
    raise ValueError(f"task.name='reward_model' needs model.num_labels=1 (a scalar reward "
                     f"head), got {cfg.model.num_labels}")
  if cfg.train.batch_size % 2:
    raise ValueError(f"train.batch_size={cfg.train.batch_size} must be even: a preference batch "
                     "holds chosen and rejected rows of each pair")


@dataclasses.dataclass
class PairStats:
  pairs: int = 0
  identical: int = 0  # skipped
  truncated: int = 0


def usable_rows(cfg, tokenizer, rows, split: str) -> tuple[list[int], PairStats]:
  """Indices of the rows whose completions differ, and the counts, logged once."""
  examples = PreferenceExamples(cfg, tokenizer)
  kept, stats = [], PairStats()
  for index in range(len(rows)):
    pair = examples.pair(rows[index])
    if pair.chosen == pair.rejected:
      stats.identical += 1
      if stats.identical <= 3:
        logging.warning("%s: chosen and rejected are identical; the pair is skipped",
                        task_files.where(rows[index]))
      continue
    _, truncated = examples.features(pair, rows[index])
    stats.truncated += truncated
    kept.append(index)
  stats.pairs = len(kept)
  logging.info("%s preference split: %d pairs; %d skipped (chosen == rejected); %d truncated "
               "to data.sequence_length=%d", split, stats.pairs, stats.identical, stats.truncated,
               cfg.data.sequence_length)
  return kept, stats


def uses_precomputed_reference(cfg) -> bool:
  return cfg.task.name in ("dpo", "ipo") and cfg.task.reference == "precomputed"


def precomputed_reference(cfg, split: str) -> np.ndarray | None:
  """[rows, 2] reference log-probs of `split` from task.reference_logps_file, or None when the
  task does not precompute them."""
  if not uses_precomputed_reference(cfg):
    return None
  path = cfg.task.reference_logps_file
  if not path or not os.path.exists(path):
    raise ValueError(f"task.reference='precomputed' needs the reference log-probs file "
                     f"task.reference_logps_file={path!r}; llm_jax.train writes it to "
                     "WORKDIR/reference_logps.npz before the first step")
  name, _ = task_files.split_name(cfg, split)
  with np.load(path) as stored:
    if name not in stored:
      raise ValueError(f"{path} has no reference log-probs of split {name!r} "
                       f"(holds {sorted(stored.files)})")
    return stored[name]


class _IndexedFeatures:
  """Row index -> [2, L] features (+ the pair's reference log-probs)."""

  def __init__(self, examples, rows, reference_logps):
    self._examples, self._rows, self._reference = examples, rows, reference_logps

  def __call__(self, index):
    out = self._examples(self._rows[index])
    if self._reference is not None:
      out["reference_logps"] = np.asarray(self._reference[index], np.float32)
    return out


def _pairs_to_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """[P, 2, ...] -> [2P, ...]: chosen at even rows, rejected at odd rows."""
  return {k: v.reshape(v.shape[0] * 2, *v.shape[2:]) for k, v in batch.items()}


def make_preference_dataset(cfg: ml_collections.ConfigDict, split: str = "train",
                            process_index: int = 0, process_count: int = 1,
                            tokenizer: Tokenizer | None = None,
                            reference_logps: np.ndarray | None = None) -> grain.IterDataset:
  """Batches of train.batch_size // process_count rows (half as many pairs)."""
  check_preference_task(cfg)
  data = cfg.data
  name, is_train = task_files.split_name(cfg, split)
  rows_per_process = cfg.train.batch_size // process_count
  if cfg.train.batch_size % process_count or rows_per_process % 2:
    raise ValueError(f"train.batch_size={cfg.train.batch_size} over {process_count} processes "
                     "must leave an even number of rows per process (chosen, rejected)")
  tokenizer = tokenizer or make_tokenizer(data)
  rows = task_files.read_task_rows(cfg, split)
  kept, _ = usable_rows(cfg, tokenizer, rows, name)
  if reference_logps is not None and len(reference_logps) != len(rows):
    raise ValueError(f"reference log-probs hold {len(reference_logps)} pairs, split {name!r} has "
                     f"{len(rows)} rows: recompute them (delete the workdir's reference_logps.npz)")
  kept = kept[process_index::process_count]
  if is_train and not kept:
    raise ValueError(f"split {name!r} has no usable preference pair for process {process_index}")
  ds = grain.MapDataset.source(kept)
  if is_train:
    if data.shuffle:
      ds = ds.shuffle(seed=data.seed if data.seed >= 0 else cfg.train.seed)
    ds = ds.repeat(data.num_epochs or None)
  examples = PreferenceExamples(cfg, tokenizer)
  ds = ds.map(_IndexedFeatures(examples, rows, reference_logps)).to_iter_dataset()
  ds = pipeline.pack_and_batch(ds, None, data, rows_per_process // 2, is_train,
                               tokenizer.specials.pad_id)
  return ds.map(_pairs_to_rows)
