r"""The T5 paper's comparison of pre-training objectives (Raffel et al. 2020, Tables 4, 5, 7)
at CPU scale.

PYTHONPATH=. python experiments/t5_objectives.py

The same encoder-decoder (the t5_tiny preset) is pre-trained for the same number of steps on
the embedded corpus (the standard library's source, byte tokenizer) with each objective:
  prefix_lm        the chunk cut at a uniform point: the prefix in, the rest out
                   (UL2's S-denoiser alone, targets on average half the chunk)
  bert_style       15% of the tokens corrupted (90% [MASK], 10% random), the whole chunk out
  deshuffling      the chunk's tokens shuffled in, the chunk out
  iid_corruption   15% of the tokens, each replaced by a sentinel; the dropped tokens out
  span_corruption  15% of the tokens in spans of mean length 3 (T5's final objective)
then each is fine-tuned on one downstream task built from the same standard library
(stdlib_tasks 'function_module' as text-to-text: a function's source in, the name of its
top-level module out, one of 8), from its last checkpoint (train.init_from), for the same
steps. A run without pre-training is the baseline. Score: exact match of greedily decoded
module names on the whole validation split (423 rows, sorted by module: a subset would not
do), ties broken by the fine-tuned validation loss. The paper's GLUE averages stand beside them; the point
is the protocol and the ranking, at a scale 10^5 times smaller.

--quick: 2 pre-training and 2 fine-tuning steps of a 1-layer model, checking the protocol.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduction_utils  # pylint: disable=g-import-not-at-top,wrong-import-position

from llm_jax import config as config_lib  # pylint: disable=wrong-import-position
from llm_jax.data import make_tokenizer  # pylint: disable=wrong-import-position
from llm_jax.objectives import make_objective  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "t5_objectives")
# GLUE average of each objective in the T5 paper (Table 4; i.i.d. and span 3: Tables 5 and 7).
PAPER_GLUE = {"prefix_lm": 80.69, "bert_style": 82.96, "deshuffling": 73.17,
              "iid_corruption": 83.28, "span_corruption": 83.49}
OBJECTIVES = {
    "prefix_lm": dict(name="ul2", ul2_denoisers=(("S", 0.0, 0.5, 1.0),)),
    "bert_style": dict(name="bert_denoising", mask_rate=0.15, mask_token_rate=0.9,
                       random_token_rate=0.1),
    "deshuffling": dict(name="deshuffle"),
    "iid_corruption": dict(name="span_corruption", noise_density=0.15, mean_noise_span_length=1.0),
    "span_corruption": dict(name="span_corruption", noise_density=0.15, mean_noise_span_length=3.0),
}
SEQUENCE_LENGTH = 64


def _model(cfg, quick: bool):
  if quick:
    cfg.model.update(dict(d_model=32, num_layers=1, num_heads=2, head_dim=16, d_ff=64))


def pretrain_config(objective: str, steps: int, data_dir: str, quick: bool):
  cfg = config_lib.base_config("t5_tiny")
  _model(cfg, quick)
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=SEQUENCE_LENGTH,
                       data_dir=data_dir))
  cfg.objective.update(OBJECTIVES[objective])
  cfg.objective.overflow = "truncate"
  cfg.optimizer.update(dict(learning_rate=1e-3, warmup_steps=min(50, steps // 5)))
  cfg.train.update(dict(batch_size=16, steps=steps, eval_every=steps, eval_batches=4,
                        log_every=max(steps // 20, 1), checkpoint_every=0, keep_checkpoints=1,
                        tensorboard=False, plot=False, progress_bar=not quick))
  return cfg


def finetune_config(steps: int, data_dir: str, quick: bool):
  cfg = config_lib.base_config("t5_tiny")
  _model(cfg, quick)
  cfg.task.update(dict(name="seq2seq", input_field="text", target_field="label",
                       eval_generate_examples=8 if quick else 512, eval_max_new_tokens=16))
  cfg.data.update(dict(train_files="stdlib:function_module/train",
                       eval_files="stdlib:function_module/validation", format="jsonl",
                       sequence_length=128, target_length=16, overflow="truncate",
                       tokenizer="byte", data_dir=data_dir))
  cfg.optimizer.update(dict(learning_rate=1e-3, warmup_steps=min(30, steps // 5)))
  cfg.train.update(dict(batch_size=16, steps=steps, eval_every=steps, eval_batches=2 if quick else 27,
                        log_every=max(steps // 20, 1), checkpoint_every=0, keep_checkpoints=1,
                        tensorboard=False, plot=False, progress_bar=not quick))
  return cfg


def check_protocol(configs: dict) -> None:
  """Same model, steps, data and lengths for every objective; each objective what it claims."""
  first = next(iter(configs.values()))
  for name, cfg in configs.items():
    assert cfg.model.to_dict() == first.model.to_dict(), name
    assert (cfg.train.steps, cfg.train.batch_size, cfg.data.sequence_length) == (
        first.train.steps, first.train.batch_size, first.data.sequence_length), name
  tokenizer = make_tokenizer(first.data)
  import numpy as np  # pylint: disable=g-import-not-at-top
  tokens = np.arange(20, 20 + SEQUENCE_LENGTH - 1, dtype=np.int32) % 200 + 20
  for name, cfg in configs.items():
    objective = make_objective(cfg.objective, tokenizer.specials, SEQUENCE_LENGTH)
    assert objective.family == "encoder_decoder", name
    example = objective(tokens[:objective.raw_length], np.random.default_rng(0))
    weights = example["loss_weights"]
    if name in ("bert_style", "deshuffling"):  # the whole chunk is the target
      assert weights.sum() == objective.raw_length + 1, name
    if name in ("iid_corruption", "span_corruption"):  # only the dropped tokens (+ sentinels)
      assert weights.sum() < 0.4 * objective.raw_length, name


def plot(rows, path: str):
  """Our exact match and fine-tuned loss against the paper's GLUE average, per objective."""
  plt = reproduction_utils.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  named = [r for r in rows if r["objective"] in PAPER_GLUE]
  baseline = [r for r in rows if r["objective"] == "no_pretraining"]
  paper = [PAPER_GLUE[r["objective"]] for r in named]
  for ax, key, label in ((axes[0], "exact_match", "downstream exact match"),
                         (axes[1], "finetune_loss", "fine-tuned validation loss (lower is better)")):
    ours = [r[key] for r in named]
    ax.scatter(paper, ours)
    for row, x, y in zip(named, paper, ours):
      ax.annotate(row["objective"], (x, y), textcoords="offset points", xytext=(4, 4))
    if baseline:
      ax.axhline(baseline[0][key], color="gray", linestyle="--", label="no pre-training")
      ax.legend()
    ax.set(xlabel="T5 paper: GLUE average", ylabel=f"ours: {label}")
    ax.grid(alpha=0.3)
  fig.suptitle("Pre-training objectives: ours vs the T5 paper")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--pretrain_steps", type=int, default=300)
  parser.add_argument("--finetune_steps", type=int, default=200)
  parser.add_argument("--objectives", default=",".join(OBJECTIVES))
  parser.add_argument("--baseline", default=True, action=argparse.BooleanOptionalAction,
                      help="also fine-tune without pre-training")
  parser.add_argument("--out_dir", default=RESULTS)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--data_dir", default="", help="default: data.data_dir's default")
  args = parser.parse_args(argv)
  pretrain_steps, finetune_steps = (2, 2) if args.quick else (args.pretrain_steps, args.finetune_steps)
  workdir = args.workdir or tempfile.mkdtemp(prefix="t5_objectives_")
  data_dir = args.data_dir or config_lib.base_config().data.data_dir

  names = args.objectives.split(",")
  configs = {n: pretrain_config(n, pretrain_steps, data_dir, args.quick) for n in names}
  check_protocol({n: pretrain_config(n, 2, data_dir, args.quick) for n in OBJECTIVES})
  rows = []
  for name in names + (["no_pretraining"] if args.baseline else []):
    tune = finetune_config(finetune_steps, data_dir, args.quick)
    if name == "no_pretraining":
      result, seconds, _ = reproduction_utils.timed_train(tune, os.path.join(workdir, name))
      pretrain_loss = float("nan")
    else:
      run = reproduction_utils.pretrain_then_finetune(configs[name], tune, workdir, name)
      result, seconds, pretrain_loss = run["finetune"], run["seconds"], run["pretrain"]["eval_loss"]
    rows.append({"objective": name, "exact_match": result["eval_exact_match"],
                 "token_accuracy": result["eval_accuracy"], "finetune_loss": result["eval_loss"],
                 "pretrain_eval_loss": pretrain_loss, "paper_glue": PAPER_GLUE.get(name, ""),
                 "seconds": seconds})
    print(f"{name}: exact match {result['eval_exact_match']:.3f}", flush=True)
  summary = {"pretrain_steps": pretrain_steps, "finetune_steps": finetune_steps,
             "downstream": "stdlib_tasks function_module as text-to-text (exact match)"}
  return write_results(rows, summary, args.out_dir)


def write_results(rows: list[dict], summary: dict, out_dir: str) -> dict:
  """Ranks the objectives (exact match, ties broken by the lower fine-tuned loss) beside the
  paper's ranking; writes the table and the plot."""
  ranked = sorted((r for r in rows if r["objective"] in PAPER_GLUE),
                  key=lambda r: (-r["exact_match"], r["finetune_loss"]))
  paper_order = sorted(PAPER_GLUE, key=lambda n: -PAPER_GLUE[n])
  for rank, row in enumerate(ranked, 1):
    row["our_rank"] = rank
    row["paper_rank"] = paper_order.index(row["objective"]) + 1
  names = {r["objective"] for r in ranked}
  summary = {**summary, "our_ranking": " > ".join(r["objective"] for r in ranked),
             "paper_ranking": " > ".join(n for n in paper_order if n in names)}
  paths = reproduction_utils.write_table(
      out_dir, "t5_objectives",
      ["objective", "exact_match", "finetune_loss", "token_accuracy", "our_rank", "paper_glue",
       "paper_rank", "pretrain_eval_loss", "seconds"], rows, summary)
  plot_path = os.path.join(out_dir, "t5_objectives.png")
  plot(rows, plot_path)
  return {"rows": rows, "summary": summary, **paths, "plot": plot_path}


if __name__ == "__main__":
  main()
