"""The `data` section of an experiment config: corpus, tokenizer, lengths, packing, shuffling."""

import os

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Corpus: 'stdlib' (this interpreter's standard-library *.py files), 'files' (files_glob)
  # or 'tfds' (a TFDS catalog dataset prepared as array_record).
  c.source = "stdlib"
  c.files_glob = ""
  # Task data (config.task.name other than 'pretrain'): globs of JSONL / CSV / TSV files, or a
  # TFDS dataset (source='tfds') whose features carry the task's field names.
  c.train_files = ""
  c.eval_files = ""
  c.format = "auto"  # 'auto' (by file extension) | 'jsonl' | 'csv' | 'tsv'
  # Pretraining with source='files': train_files and eval_files (globs) name each split's
  # files instead of files_glob's hashed split; validation_fraction is then unused (may be 0).
  # What one document is, for 'files': 'file' | 'line' | 'paragraph'. 'stream' (any source):
  # the split as one token stream cut into contiguous windows of the objective's raw_length.
  c.doc_split = "file"
  c.random_windows = False  # 'stream': windows at random offsets (nanoGPT's get_batch).
  c.validation_fraction = 0.02  # Share of documents (by hashed path) in the validation split.
  # 'files' corpora: a binary or non-UTF-8 file is named in a warning ('warn'), left out
  # ('skip') or stops the run ('error'); see data/corpus_check.py.
  c.undecodable_files = "warn"
  c.tfds_name = ""  # e.g. 'lm1b', 'tiny_shakespeare'.
  c.tfds_data_dir = ""  # '' -> TFDS's own default data dir.
  c.tfds_download = False  # Allow download_and_prepare(file_format='array_record').
  c.text_feature = "text"
  c.train_split = "train"
  c.eval_split = "validation"
  # Prepared corpora and trained tokenizers are cached here.
  c.data_dir = os.environ.get("LLM_JAX_DATA_DIR", "~/.cache/llm_jax")

  # Tokenizer: 'byte' | 'sentencepiece' | 'hf' | 'char'. A tokenizer_path ('*.model',
  # 'tokenizer.json' or a char vocabulary '*.json') loads an existing one; 'sentencepiece'
  # without a path trains one; 'char' without a path takes the training split's characters.
  c.tokenizer = "byte"
  c.tokenizer_path = ""
  c.spm_model_type = "unigram"  # 'unigram' | 'bpe'
  c.spm_vocab_size = 8000
  c.spm_max_sentences = 100_000  # Lines sampled from the corpus to train on.
  c.num_sentinels = 100

  # Lengths: the objective turns raw token chunks into examples of these lengths.
  c.sequence_length = 128
  c.target_length = 0  # Encoder-decoder decoder length; 0 lets the objective choose.
  # Documents longer than a chunk: 'split' into chunks, 'truncate' to the first, or 'error'.
  c.overflow = "split"

  c.pack = True  # Pack several examples per row (segment ids) instead of padding each.
  c.num_packing_bins = 0  # Rows packed at once; 0 -> the per-process batch size.
  c.shuffle = True  # Shuffle documents each epoch (train only).
  c.shuffle_buffer = 1024  # Window shuffle of chunks after tokenizing; 0 disables.
  c.seed = -1  # Data seed; -1 -> cfg.train.seed.
  c.num_epochs = 0  # Train epochs; 0 repeats forever.
  c.num_workers = 0  # grain worker processes; 0 runs in the main process.
  return c
