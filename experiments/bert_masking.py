r"""BERT's masking ablation (Devlin et al. 2019, Table 8) at CPU scale.

PYTHONPATH=. python experiments/bert_masking.py

The same encoder (the bert_tiny preset) is pre-trained with masked LM on the embedded corpus
(the standard library's source, byte tokenizer; 15% of the tokens selected) for the same
steps with each mix of what a selected token becomes ([MASK] / kept / random):
  80/10/10 (BERT), 100/0/0, 80/0/20, 80/20/0
then each is fine-tuned on the same classification task (stdlib_tasks 'function_module':
the top-level module, one of 8, of a function's source) from its last checkpoint
(train.init_from), for the same steps, beside a run without pre-training. Scores: validation
accuracy and macro-F1; the paper's MNLI dev accuracy and NER dev F1 (fine-tuned) stand beside
them.

--quick: 2 pre-training and 2 fine-tuning steps of a 1-layer model, checking the protocol.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduction_utils  # pylint: disable=g-import-not-at-top,wrong-import-position

from llm_jax import config as config_lib  # pylint: disable=wrong-import-position
from llm_jax.data import make_tokenizer  # pylint: disable=wrong-import-position
from llm_jax.data.stdlib_tasks import MODULES  # pylint: disable=wrong-import-position
from llm_jax.objectives import make_objective  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bert_masking")
# (mask, same, random) -> (MNLI dev accuracy, NER dev F1 fine-tuned): BERT Table 8.
MIXES = {"80/10/10": (0.8, 0.1, 0.1), "100/0/0": (1.0, 0.0, 0.0), "80/0/20": (0.8, 0.0, 0.2),
         "80/20/0": (0.8, 0.2, 0.0)}
PAPER = {"80/10/10": (84.2, 95.4), "100/0/0": (84.3, 94.9), "80/0/20": (84.1, 95.2),
         "80/20/0": (84.4, 95.2)}
SEQUENCE_LENGTH = 64


def _model(cfg, quick: bool):
  cfg.model.update(dict(type_vocab_size=0, nsp_head=False))
  if quick:
    cfg.model.update(dict(d_model=32, num_layers=1, num_heads=2, d_ff=64))


def pretrain_config(mix: str, steps: int, data_dir: str, quick: bool):
  mask, _, random = MIXES[mix]
  cfg = config_lib.base_config("bert_tiny")
  _model(cfg, quick)
  cfg.model.pooler = False
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=SEQUENCE_LENGTH,
                       data_dir=data_dir))
  cfg.objective.update(dict(name="mlm", mask_rate=0.15, mask_token_rate=mask,
                            random_token_rate=random, overflow="truncate"))
  cfg.optimizer.update(dict(learning_rate=1e-3, warmup_steps=min(50, steps // 5)))
  cfg.train.update(dict(batch_size=16, steps=steps, eval_every=steps, eval_batches=4,
                        log_every=max(steps // 20, 1), checkpoint_every=0, keep_checkpoints=1,
                        tensorboard=False, plot=False, progress_bar=not quick))
  return cfg


def finetune_config(steps: int, data_dir: str, quick: bool):
  """configs/finetune_bert_classification.py's recipe, for `steps` steps."""
  cfg = config_lib.base_config("bert_tiny")
  _model(cfg, quick)
  cfg.task.update(dict(name="classification", text_field="text", label_field="label",
                       labels=MODULES))
  cfg.model.update(dict(num_labels=len(MODULES), mlm_head=False, pooler=True, dropout_rate=0.1))
  cfg.data.update(dict(train_files="stdlib:function_module/train",
                       eval_files="stdlib:function_module/validation", format="jsonl",
                       sequence_length=128, overflow="truncate", tokenizer="byte",
                       data_dir=data_dir))
  cfg.optimizer.update(dict(learning_rate=1e-3, warmup_steps=min(30, steps // 5), weight_decay=0.01,
                            lr_multipliers=((r"^(classifier|pooler)/", 5.0),)))
  cfg.train.update(dict(batch_size=16, steps=steps, eval_every=steps, eval_batches=2 if quick else 27,
                        log_every=max(steps // 20, 1), checkpoint_every=0, keep_checkpoints=1,
                        tensorboard=False, plot=False, progress_bar=not quick))
  return cfg


def check_protocol(configs: dict) -> dict:
  """Same model and budget for every mix; each mix's measured [MASK] / kept / random shares."""
  first = next(iter(configs.values()))
  tokenizer = make_tokenizer(first.data)
  rng = np.random.default_rng(0)
  tokens = rng.integers(9 + 32, 9 + 127, SEQUENCE_LENGTH).astype(np.int32)  # printable bytes
  shares = {}
  for mix, cfg in configs.items():
    assert cfg.model.to_dict() == first.model.to_dict(), mix
    assert (cfg.train.steps, cfg.train.batch_size) == (first.train.steps, first.train.batch_size)
    objective = make_objective(cfg.objective, tokenizer.specials, SEQUENCE_LENGTH)
    counts = np.zeros(3)  # selected tokens that became [MASK], stayed, became another token
    for _ in range(300):
      example = objective(tokens, rng)
      selected = example["loss_weights"] > 0
      inputs, original = example["inputs"][selected], tokens[selected]
      is_mask, is_same = inputs == tokenizer.specials.mask_id, inputs == original
      counts += [is_mask.sum(), is_same.sum(), (~is_mask & ~is_same).sum()]
    measured = counts / counts.sum()
    # A random token equals the original with probability ~1/250: the kept share is a bit higher.
    assert np.allclose(measured, MIXES[mix], atol=0.03), (mix, measured, MIXES[mix])
    shares[mix] = [round(float(s), 3) for s in measured]
  return shares


def plot(rows, path: str):
  plt = reproduction_utils.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  mixes = [r["mix"] for r in rows]
  x = np.arange(len(mixes))
  ax.bar(x - 0.2, [100 * r["accuracy"] for r in rows], 0.4, label="ours: accuracy (%)")
  ax.bar(x + 0.2, [r["paper_mnli"] if r["paper_mnli"] != "" else 0 for r in rows], 0.4,
         label="BERT Table 8: MNLI dev (%)")
  ax.set_xticks(x, mixes)
  ax.set(xlabel="[MASK] / same / random", ylabel="%", title="BERT masking ablation")
  ax.legend()
  ax.grid(alpha=0.3, axis="y")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--pretrain_steps", type=int, default=300)
  parser.add_argument("--finetune_steps", type=int, default=200)
  parser.add_argument("--mixes", default=",".join(MIXES))
  parser.add_argument("--baseline", default=True, action=argparse.BooleanOptionalAction,
                      help="also fine-tune without pre-training")
  parser.add_argument("--out_dir", default=RESULTS)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args(argv)
  pretrain_steps, finetune_steps = (2, 2) if args.quick else (args.pretrain_steps, args.finetune_steps)
  workdir = args.workdir or tempfile.mkdtemp(prefix="bert_masking_")
  data_dir = args.data_dir or config_lib.base_config().data.data_dir

  mixes = args.mixes.split(",")
  configs = {m: pretrain_config(m, pretrain_steps, data_dir, args.quick) for m in mixes}
  shares = check_protocol({m: pretrain_config(m, 2, data_dir, args.quick) for m in MIXES})
  rows = []
  for mix in mixes + (["no_pretraining"] if args.baseline else []):
    tune = finetune_config(finetune_steps, data_dir, args.quick)
    if mix == "no_pretraining":
      result, seconds, _ = reproduction_utils.timed_train(tune, os.path.join(workdir, mix))
    else:
      run = reproduction_utils.pretrain_then_finetune(configs[mix], tune, workdir, mix.replace("/", "_"))
      result, seconds = run["finetune"], run["seconds"]
    mnli, ner = PAPER.get(mix, ("", ""))
    rows.append({"mix": mix, "accuracy": result["eval_accuracy"],
                 "macro_f1": result.get("eval_macro_f1", float("nan")),
                 "paper_mnli": mnli, "paper_ner_f1": ner, "seconds": seconds})
    print(f"{mix}: accuracy {result['eval_accuracy']:.3f}", flush=True)
  summary = {"pretrain_steps": pretrain_steps, "finetune_steps": finetune_steps,
             "downstream": "stdlib_tasks function_module classification (8 classes)",
             "measured_mask_same_random_shares": shares}
  paths = reproduction_utils.write_table(
      args.out_dir, "bert_masking",
      ["mix", "accuracy", "macro_f1", "paper_mnli", "paper_ner_f1", "seconds"], rows, summary)
  plot_path = os.path.join(args.out_dir, "bert_masking.png")
  plot(rows, plot_path)
  return {"rows": rows, "summary": summary, **paths, "plot": plot_path}


if __name__ == "__main__":
  main()
