r"""nanoGPT's Shakespeare character model, with nanoGPT's CPU recipe, in llm_jax.

PYTHONPATH=. python experiments/nanogpt_shakespeare.py --text=path/to/input.txt

`input.txt` is nanoGPT's data/shakespeare_char/input.txt (tiny Shakespeare, 1,115,394
characters). Without --text the TFDS `tiny_shakespeare` dataset is used when it is prepared
locally (its train + validation + test texts in order are that same file); nothing is
downloaded. `--stand_in` trains on ~1 MB of English from the standard library's docstrings
instead, for machines without the file (its loss is not comparable with Shakespeare's).

The recipe is nanoGPT's README command for CPUs:
  python train.py config/train_shakespeare_char.py --device=cpu --compile=False
    --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
    --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
i.e. a character vocabulary (prepare.py), the first 90% of the characters for training and
the last 10% for validation, 4 layers, 4 heads, d 128, context 64, batch 12, 2,000
iterations, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW (0.9, 0.99),
weight decay 0.1 on matrices and embeddings, gradient clipping 1.0, no dropout, no biases;
train windows at random offsets; validation loss: the mean over 20 batches of 12 random
64-character windows of the validation text, every 250 iterations.

--quick runs 10 steps on 100 kB of the stand-in text and checks the protocol; the suite runs it.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduction_utils  # pylint: disable=g-import-not-at-top,wrong-import-position

from llm_jax import config as config_lib  # pylint: disable=wrong-import-position
from llm_jax.data import make_tokenizer  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "nanogpt_shakespeare")
# nanoGPT's recipe on this project's 2-core machine: wall time and val loss at iteration 2000.
NANOGPT_SECONDS = 186.0
NANOGPT_VAL_LOSS = 1.8857
SHAKESPEARE_CHARS = 1_115_394
TRAIN_FRACTION = 0.9


def shakespeare_from_tfds() -> str | None:
  """tiny_shakespeare's train + validation + test texts when prepared locally, else None."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder("tiny_shakespeare")
    if not builder.is_prepared():
      return None
    texts = []
    for split in ("train", "validation", "test"):
      source = builder.as_data_source(split)
      texts += [source[i]["text"] for i in range(len(source))]
  except Exception:  # pylint: disable=broad-except
    return None  # Not prepared, or stored in a format that needs TensorFlow.
  return "".join(t.decode("utf-8") if isinstance(t, bytes) else t for t in texts)


def load_text(args) -> tuple[str, str]:
  """(text, where it came from)."""
  if args.text:
    with open(os.path.expanduser(args.text), encoding="utf-8") as f:
      return f.read(), args.text
  if args.stand_in or args.quick:
    n = 100_000 if args.quick else SHAKESPEARE_CHARS
    return reproduction_utils.stdlib_english_text(n), "stand-in: standard-library docstrings"
  text = shakespeare_from_tfds()
  if text is None:
    raise SystemExit("No Shakespeare: pass --text=path/to/input.txt (nanoGPT's "
                     "data/shakespeare_char/input.txt), prepare TFDS tiny_shakespeare as "
                     "array_record, or use --stand_in")
  return text, "tfds:tiny_shakespeare"


def write_splits(text: str, data_dir: str) -> tuple[str, str]:
  """nanoGPT's split: the first 90% of the characters to train.txt, the rest to val.txt."""
  os.makedirs(data_dir, exist_ok=True)
  cut = int(len(text) * TRAIN_FRACTION)
  paths = os.path.join(data_dir, "train.txt"), os.path.join(data_dir, "val.txt")
  for path, part in zip(paths, (text[:cut], text[cut:])):
    with open(path, "w", encoding="utf-8") as f:
      f.write(part)
  return paths


def recipe_config(train_path: str, eval_path: str, data_dir: str):
  """nanoGPT's CPU recipe as an llm_jax config (model.vocab_size is set from the tokenizer)."""
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(dict(d_model=128, num_layers=4, num_heads=4, d_ff=512, max_len=64,
                        use_bias=False, activation="gelu", dropout_rate=0.0,
                        attention_dropout_rate=0.0, tie_embeddings=True, position="learned"))
  cfg.data.update(dict(source="files", train_files=train_path, eval_files=eval_path,
                       validation_fraction=0.0, doc_split="stream", random_windows=True,
                       tokenizer="char", sequence_length=64, data_dir=data_dir))
  cfg.objective.name = "clm"
  cfg.optimizer.update(dict(name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=100,
                            end_lr_fraction=0.1, b1=0.9, b2=0.99, weight_decay=0.1,
                            no_decay="norms_biases", grad_clip_norm=1.0))
  cfg.train.update(dict(batch_size=12, steps=2000, eval_every=250, eval_batches=20,
                        log_every=10, checkpoint_every=0, keep_checkpoints=1, tensorboard=False))
  cfg.model.vocab_size = make_tokenizer(cfg.data).vocab_size
  return cfg


def check_protocol(cfg, text: str, train_path: str, eval_path: str) -> dict:
  """Asserts nanoGPT's protocol on the config and data; returns what was checked."""
  with open(train_path, encoding="utf-8") as f:
    train_text = f.read()
  with open(eval_path, encoding="utf-8") as f:
    eval_text = f.read()
  assert train_text + eval_text == text and len(train_text) == int(TRAIN_FRACTION * len(text))
  tokenizer = make_tokenizer(cfg.data)
  assert tokenizer.chars == "".join(sorted(set(train_text))), "vocabulary is not the training text's"
  assert tokenizer.decode(tokenizer.encode(train_text[:1000])) == train_text[:1000]
  m, o, t = cfg.model, cfg.optimizer, cfg.train
  assert (m.num_layers, m.num_heads, m.d_model, m.max_len) == (4, 4, 128, 64)
  assert (m.use_bias, m.dropout_rate, m.attention_dropout_rate) == (False, 0.0, 0.0)
  assert (t.batch_size, cfg.data.sequence_length) == (12, 64)
  assert (o.learning_rate, o.learning_rate * o.end_lr_fraction, o.warmup_steps) == (1e-3, 1e-4, 100)
  assert (o.schedule, o.b1, o.b2, o.weight_decay, o.grad_clip_norm) == ("cosine", 0.9, 0.99, 0.1, 1.0)
  assert cfg.data.doc_split == "stream" and cfg.data.random_windows
  return {"vocabulary": len(tokenizer.chars), "train_chars": len(train_text),
          "val_chars": len(eval_text)}


def plot(rows, path: str, title: str):
  plt = reproduction_utils.pyplot()
  train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.plot(*zip(*train), label="train loss (batch)", linewidth=1)
  ax.plot(*zip(*evals), "o-", label="val loss (20 x 12 random windows)")
  ax.axhline(NANOGPT_VAL_LOSS, color="gray", linestyle="--", label=f"nanoGPT val {NANOGPT_VAL_LOSS}")
  ax.set(xlabel="iteration", ylabel="loss (nats / character)", title=title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--text", default="", help="nanoGPT's shakespeare_char/input.txt")
  parser.add_argument("--stand_in", action="store_true", help="~1 MB of stdlib docstrings")
  parser.add_argument("--quick", action="store_true", help="10 steps on 100 kB, protocol checks")
  parser.add_argument("--steps", type=int, default=0, help="override the 2,000 iterations")
  parser.add_argument("--out_dir", default=RESULTS)
  parser.add_argument("--workdir", default="", help="default: a new temporary folder")
  args = parser.parse_args(argv)

  text, origin = load_text(args)
  workdir = args.workdir or tempfile.mkdtemp(prefix="nanogpt_shakespeare_")
  train_path, eval_path = write_splits(text, os.path.join(workdir, "text"))
  cfg = recipe_config(train_path, eval_path, os.path.join(workdir, "data"))
  checked = check_protocol(cfg, text, train_path, eval_path)
  if args.quick:
    cfg.train.update(dict(steps=10, eval_every=5, eval_batches=2, log_every=2, progress_bar=False,
                          plot=False))
    cfg.optimizer.warmup_steps = 2
  if args.steps:
    cfg.train.steps = args.steps
  result, seconds, rows = reproduction_utils.timed_train(cfg, os.path.join(workdir, "run"))

  train_rows = [r for r in rows if "steps_per_sec" in r and r["step"] > 20]
  ms_per_step = (1000 * sum(1 / r["steps_per_sec"] for r in train_rows) / len(train_rows)
                 if train_rows else float("nan"))
  summary = {
      "data": origin, **checked, "steps": cfg.train.steps, "val_loss": result["eval_loss"],
      "wall_seconds": seconds, "ms_per_step_after_warmup": ms_per_step,
      "nanogpt_val_loss": NANOGPT_VAL_LOSS, "nanogpt_wall_seconds": NANOGPT_SECONDS,
      "model_vocab_size": cfg.model.vocab_size,
  }
  evals = [{"step": r["step"], "val_loss": r["eval_loss"]} for r in rows if "eval_loss" in r]
  paths = reproduction_utils.write_table(args.out_dir, "nanogpt_shakespeare", ["step", "val_loss"],
                                         evals, summary)
  plot_path = os.path.join(args.out_dir, "nanogpt_shakespeare.png")
  plot(rows, plot_path, f"nanoGPT CPU recipe in llm_jax ({origin})")
  print(f"val loss {result['eval_loss']:.4f} after {cfg.train.steps} steps in {seconds:.0f} s "
        f"({ms_per_step:.1f} ms/step); nanoGPT on this machine: {NANOGPT_VAL_LOSS} in "
        f"{NANOGPT_SECONDS:.0f} s (84 ms/iteration). Data: {origin}.")
  return {**summary, **paths, "plot": plot_path}


if __name__ == "__main__":
  main()
