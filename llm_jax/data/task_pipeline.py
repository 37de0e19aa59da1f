"""The grain pipeline for fine-tuning tasks, with pipeline.py's contracts.

    rows (task_files: JSONL / CSV / TSV globs or TFDS) -> row -> features (task_examples)
      -> this process's rows [process_index::process_count] -> train: shuffle per epoch, repeat
      -> classification / regression: one padded example per row
         seq2seq / sft / cloze: FirstFitPack into rows of L (segment ids, positions; one example
         per row with data.pack=False)
      -> batches [train.batch_size // process_count, ...] of NumPy arrays

`it.get_state()` / `it.set_state()` resume exactly. The eval split is read once, unshuffled, and
its last batch is padded with empty rows (loss weight 0). Batch fields per task: see
`task_feature_lengths` and task_examples' module docstring.
"""

import grain
import ml_collections

from llm_jax.data import task_examples
from llm_jax.data import task_files
from llm_jax.data import pipeline
from llm_jax.data import preference_data
from llm_jax.data.tokenizer import Tokenizer, make_tokenizer


def task_feature_lengths(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """Per-example feature lengths of a packable task (seq2seq, sft, cloze), as packed."""
  length = cfg.data.sequence_length
  if cfg.model.family == "encoder_decoder":
    target = cfg.data.target_length or length
    return {"inputs": length, "decoder_inputs": target, "targets": target, "loss_weights": target}
  lengths = {k: length for k in ("inputs", "targets", "loss_weights")}
  if cfg.model.attention == "prefix":
    lengths["prefix_mask"] = length
  return lengths


def make_task_dataset(cfg: ml_collections.ConfigDict, split: str = "train", process_index: int = 0,
                      process_count: int = 1, tokenizer: Tokenizer | None = None) -> grain.IterDataset:
  """The task pipeline as a grain IterDataset of batch dicts (see the module docstring)."""
  if cfg.task.name in preference_data.PREFERENCE_TASKS:
    return preference_data.make_preference_dataset(
        cfg, split, process_index, process_count, tokenizer,
        reference_logps=preference_data.precomputed_reference(cfg, split))
  data = cfg.data
  name, is_train = task_files.split_name(cfg, split)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  global_batch = cfg.train.batch_size
  if global_batch % process_count:
    raise ValueError(f"train.batch_size={global_batch} is not divisible by process_count={process_count}")
  batch_size = global_batch // process_count
  seed = data.seed if data.seed >= 0 else cfg.train.seed
  tokenizer = tokenizer or make_tokenizer(data)
  examples = task_examples.TaskExamples(cfg, tokenizer)

  rows = task_files.read_task_rows(cfg, split)
  if isinstance(rows, list):  # In memory: fail on a bad row now, not mid-run.
    for row in rows:
      examples.check_row(row)
  shard_size = len(range(process_index, len(rows), process_count))
  if is_train and not shard_size:
    raise ValueError(f"Split {name!r} has {len(rows)} rows, fewer than process_count={process_count}")
  ds = grain.MapDataset.source(rows)[process_index::process_count]
  if is_train:
    if data.shuffle:
      ds = ds.shuffle(seed=seed)
    ds = ds.repeat(data.num_epochs or None)
  ds = ds.map(examples).to_iter_dataset()

  lengths = task_feature_lengths(cfg) if examples.name in task_examples.PACKABLE_TASKS else None
  return pipeline.pack_and_batch(ds, lengths, data, batch_size, is_train,
                                 tokenizer.specials.pad_id)


def make_task_pipeline(cfg: ml_collections.ConfigDict, split: str = "train", process_index: int = 0,
                       process_count: int = 1, tokenizer: Tokenizer | None = None
                       ) -> grain.DatasetIterator:
  """An iterator of batch dicts `[train.batch_size // process_count, ...]` with get/set_state."""
  return iter(make_task_dataset(cfg, split, process_index, process_count, tokenizer))
