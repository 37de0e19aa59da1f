r"""Print a few decoded examples of an experiment's input pipeline.

python -m llm_jax.data.inspect --config=configs/gpt_tiny.py --config.objective.name=mlm \
    --num_examples=3

Each packed row is shown segment by segment. Targets that count in the loss are in ⟦ ⟧;
masks and sentinels ([MASK], <extra_id_0>, ...) and </s> are written by name.
"""

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from llm_jax import cli_flags
from llm_jax.data.pipeline import make_pipeline
from llm_jax.data.tokenizer import make_tokenizer

FLAGS = cli_flags.flag_values(__name__)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          flag_values=FLAGS)
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 3, "Rows of the first batch to print.",
                                     flag_values=FLAGS)
_SPLIT = flags.DEFINE_string("split", "train", "'train' or 'eval'.", flag_values=FLAGS)
flags.mark_flag_as_required("config", flag_values=FLAGS)


def _weighted(tokenizer, ids: np.ndarray, weights: np.ndarray) -> str:
  """Decodes `ids`, bracketing the runs whose loss weight is non-zero."""
  out, start = [], 0
  for end in range(1, len(ids) + 1):
    if end == len(ids) or (weights[end] > 0) != (weights[start] > 0):
      text = tokenizer.decode(ids[start:end])
      out.append(f"⟦{text}⟧" if weights[start] > 0 else text)
      start = end
  return "".join(out)


def format_row(batch: dict[str, np.ndarray], row: int, tokenizer) -> str:
  """One packed row as text: each segment's fields, decoded."""
  if batch["targets"].ndim == 1:  # Classification / regression: one example, one target per row.
    real = batch["input_segment_ids"][row] > 0
    lines = [f"inputs        : {tokenizer.decode(batch['inputs'][row][real])!r}"]
    if "token_type_ids" in batch:
      lines.append(f"token_type_ids: {batch['token_type_ids'][row][real].tolist()}")
    lines.append(f"target        : {batch['targets'][row]} (loss weight {batch['loss_weights'][row]})")
    return "\n".join(lines)
  lines = []
  seg_in = batch["input_segment_ids"][row]
  seg_dec = batch.get("decoder_segment_ids", batch["input_segment_ids"])[row]
  target_key = "decoder_inputs" if "decoder_inputs" in batch else "inputs"
  for segment in [s for s in np.unique(seg_in) if s > 0]:
    on_in, on_dec = seg_in == segment, seg_dec == segment
    lines.append(f"-- segment {segment}: {on_in.sum()} input tokens, "
                 f"{int(batch['loss_weights'][row][on_dec].sum())} in the loss")
    inputs = batch["inputs"][row][on_in]
    if "prefix_mask" in batch:
      prefix = batch["prefix_mask"][row][on_in] > 0
      lines.append(f"prefix        : {tokenizer.decode(inputs[prefix])!r}")
      lines.append(f"rest          : {tokenizer.decode(inputs[~prefix])!r}")
    else:
      lines.append(f"inputs        : {tokenizer.decode(inputs)!r}")
    if "token_type_ids" in batch:
      lines.append(f"token_type_ids: {batch['token_type_ids'][row][on_in].tolist()}")
    if "nsp_labels" in batch:
      lines.append(f"nsp_labels    : {batch['nsp_labels'][row][on_in].max()}")
    if target_key == "decoder_inputs":
      lines.append(f"decoder_inputs: {tokenizer.decode(batch['decoder_inputs'][row][on_dec])!r}")
    targets = _weighted(tokenizer, batch["targets"][row][on_dec], batch["loss_weights"][row][on_dec])
    lines.append(f"targets       : {targets!r}")
  padding = int((seg_in == 0).sum())
  lines.append(f"-- padding: {padding} input tokens")
  return "\n".join(lines)


def main(argv):
  del argv
  cfg = _CONFIG.value
  tokenizer = make_tokenizer(cfg.data)
  batch = next(make_pipeline(cfg, split=_SPLIT.value, tokenizer=tokenizer))
  task = cfg.task.name if cfg.get("task") is not None else "pretrain"
  print(f"task={task} objective={cfg.objective.name} tokenizer={cfg.data.tokenizer} "
        f"vocab_size={tokenizer.vocab_size} split={_SPLIT.value}")
  print("fields: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in sorted(batch.items())))
  for row in range(min(_NUM_EXAMPLES.value, len(batch["inputs"]))):
    print(f"\n===== row {row}")
    print(format_row(batch, row, tokenizer))


if __name__ == "__main__":
  app.run(main)
