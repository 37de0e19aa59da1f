"""The data path: TFDS corpora (array_record, no TensorFlow), tokenizers, grain pipeline."""

from llm_jax.data.config import default_data_config
from llm_jax.data.pipeline import make_dataset, make_pipeline
from llm_jax.data.task_examples import cloze_candidates, generation_examples
from llm_jax.data.task_files import read_task_rows
from llm_jax.data.task_pipeline import make_task_dataset, make_task_pipeline
from llm_jax.data.tokenizer import make_tokenizer
