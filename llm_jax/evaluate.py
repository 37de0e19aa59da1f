r"""Evaluate a trained or converted model, or score generated text.

  # loss, perplexity and token accuracy (masked-token accuracy for encoders) on a data split
  python -m llm_jax.evaluate --workdir=/tmp/gpt_tiny [--split=validation] [--max_batches=N]
  # log-likelihood of each line of a file (JSON lines with --output)
  python -m llm_jax.evaluate --workdir=/tmp/gpt_tiny --texts_file=texts.txt --output=scores.jsonl
  python -m llm_jax.evaluate --hf=/path/to/hf_folder --texts_file=texts.txt
  # BLEU and ROUGE-1/2/L of predictions against references (one per line)
  python -m llm_jax.evaluate --predictions=pred.txt --references=ref.txt --output=scores.json
  # harness tasks (built-in names or .yaml/.py task files), k-shot, over one, some or all steps
  python -m llm_jax.evaluate --workdir=/tmp/gpt_tiny --tasks=arithmetic_mc,arithmetic_gen \
      --num_fewshot=2 --steps=all --out=/tmp/gpt_tiny/eval
  python -m llm_jax.evaluate --hf=/path/to/hf_folder --tasks=my_task.yaml --out=/tmp/eval

For encoder-decoder models each line of --texts_file is `source<TAB>target`, and the target is
scored given the source.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags

from llm_jax import cli_flags

FLAGS = cli_flags.flag_values(__name__)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).",
                               flag_values=FLAGS)
_HF = flags.DEFINE_string("hf", None, "Hugging Face model folder (config.json, weights, "
                          "tokenizer.json) instead of --workdir.", flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).",
                             flag_values=FLAGS)
_SPLIT = flags.DEFINE_string("split", "validation", "Data split for dataset metrics.",
                             flag_values=FLAGS)
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0, "Stop after this many batches (0: all).",
                                    flag_values=FLAGS)
_TEXTS_FILE = flags.DEFINE_string("texts_file", None, "Score each line of this file.",
                                  flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Rows per batch when scoring texts.",
                                   flag_values=FLAGS)
_FIRST_TOKEN = flags.DEFINE_enum(
    "first_token", "bos", ["bos", "eos", "none"],
    "Decoder-only: token put before each text so that its first token is scored too ('bos' "
    "falls back to eos when the tokenizer has no bos; 'none' scores from the second token).",
    flag_values=FLAGS)
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Generated texts, one per line.",
                                   flag_values=FLAGS)
_REFERENCES = flags.DEFINE_string("references", None, "Reference texts, one per line.",
                                  flag_values=FLAGS)
_TASKS = flags.DEFINE_list("tasks", None, "Harness tasks: built-in names (arithmetic_mc, "
                          "arithmetic_gen, counting_perplexity) or .yaml/.py task files.",
                          flag_values=FLAGS)
_NUM_FEWSHOT = flags.DEFINE_integer("num_fewshot", 0, "Solved examples before each item.",
                                    flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 1234, "Seed of the k-shot examples and of sampling.",
                             flag_values=FLAGS)
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate the first N items of each task (0: all).",
                              flag_values=FLAGS)
_STEPS = flags.DEFINE_string("steps", None, "Harness over several checkpoints: 'all' or "
                             "'100,200' (plots metric against step).", flag_values=FLAGS)
_CHAT_TEMPLATE = flags.DEFINE_string("chat_template", None, "Wrap prompts as a user turn of "
                                     "this chat template (file/folder, or 'builtin').",
                                     flag_values=FLAGS)
_EFFICIENCY = flags.DEFINE_bool("efficiency", True, "Harness: also measure prefill/decode "
                                "tokens/s and peak memory.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Harness: folder for results.json, results.md (and "
                           "metrics_by_step.png).", flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("output", None, "Write results here (JSON; JSON lines for "
                              "--texts_file).", flag_values=FLAGS)


class UsageError(ValueError):
  """Flags that do not make sense together, or input files that cannot be used."""


def read_lines(path: str, flag: str) -> list[str]:
  if not os.path.isfile(path):
    raise UsageError(f"--{flag}={path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not lines:
    raise UsageError(f"--{flag}={path!r} is empty")
  return lines


def print_table(rows: list[tuple[str, object]]) -> None:
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    print(f"{name:<{width}}  {text}")


def evaluate_texts(predictions_path: str, references_path: str) -> dict:
  from llm_jax.evaluation import text_metrics  # pylint: disable=g-import-not-at-top
  predictions = read_lines(predictions_path, "predictions")
  references = read_lines(references_path, "references")
  if len(predictions) != len(references):
    raise UsageError(f"--predictions has {len(predictions)} lines but --references has "
                     f"{len(references)}")
  return {**text_metrics.text_metrics(predictions, references), "examples": len(predictions)}


def load_model(workdir: str | None, hf: str | None, step: int | None, mesh=None):
  """(model, params, model_cfg, tokenizer, full cfg or None)."""
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  if hf:
    if step is not None:
      raise UsageError("--step is for --workdir checkpoints, not --hf")
    model, params, model_cfg, tokenizer = load.load_from_hf(hf)
    return model, params, model_cfg, tokenizer, None
  model, params, cfg, tokenizer = load.load_from_workdir(workdir, step=step, mesh=mesh)
  return model, params, cfg.model, tokenizer, cfg


def _max_length(model_cfg) -> int | None:
  """Longest input of a model with a learned position table; others take any length."""
  return model_cfg.max_len if model_cfg.position == "learned" else None


def score_texts(model, params, model_cfg, tokenizer, lines: list[str], batch_size: int,
                first_token: str) -> list[dict]:
  """One dict per line: text, tokens scored, log-likelihood (nats), perplexity."""
  from llm_jax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  specials = tokenizer.specials
  family = model_cfg.family
  if family == "decoder":
    start = {"bos": specials.bos_id if specials.bos_id is not None else specials.eos_id,
             "eos": specials.eos_id, "none": None}[first_token]
    if first_token != "none" and start is None:
      raise UsageError(f"--first_token={first_token}: the tokenizer has no such token")
    rows = [([start] if start is not None else []) + tokenizer.encode(t) for t in lines]
    for i, row in enumerate(rows):
      if len(row) < 2:
        raise UsageError(f"--texts_file line {i + 1} has nothing to score")
    scores = scoring.sequence_log_likelihoods(
        model, params, rows, family=family, batch_size=batch_size, pad_id=specials.pad_id,
        max_length=_max_length(model_cfg))
  elif family == "encoder_decoder":
    pairs = [line.split("\t") for line in lines]
    for i, pair in enumerate(pairs):
      if len(pair) != 2 or not pair[1]:
        raise UsageError(f"--texts_file line {i + 1}: an encoder-decoder model needs "
                         "'source<TAB>target' lines")
    eos = [specials.eos_id] if specials.eos_id is not None else []
    scores = scoring.sequence_log_likelihoods(
        model, params, [tokenizer.encode(s) + eos for s, _ in pairs],
        target_rows=[tokenizer.encode(t) + eos for _, t in pairs], family=family,
        batch_size=batch_size, pad_id=specials.pad_id,
        decoder_start_id=model_cfg.decoder_start_token_id, max_length=_max_length(model_cfg))
  else:
    raise UsageError(f"--texts_file needs a decoder or encoder_decoder model, this one is "
                     f"model.family={family!r}")
  return [{"text": line, "tokens": s.num_tokens, "log_likelihood": s.log_likelihood,
           "perplexity": s.perplexity} for line, s in zip(lines, scores)]


def evaluate_split(cfg, model, params, mesh, split: str, max_batches: int) -> dict:
  """Loss, perplexity and accuracy with the training eval step, on the run's mesh."""
  # pylint: disable=g-import-not-at-top
  import jax
  from llm_jax import data
  from llm_jax import sharding
  from llm_jax.evaluation import scoring
  from llm_jax.training import train_step
  # pylint: enable=g-import-not-at-top
  rules = sharding.rules_from_config(cfg)
  _, state_shardings = train_step.abstract_train_state(cfg, model, mesh)
  eval_step = train_step.make_eval_step(cfg, model, mesh, state_shardings)
  batches = (sharding.make_global_batch(b, mesh, rules) for b in data.make_pipeline(
      cfg, split=split, process_index=jax.process_index(), process_count=jax.process_count()))
  return scoring.metrics_from_batches(eval_step, params, batches,
                                      max_batches=max_batches or None)


def evaluate_harness_tasks() -> dict:
  """The harness run the flags ask for; writes --out/results.{json,md} (+ the plot)."""
  from llm_jax.evaluation import harness  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation.harness import report  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation.harness import suite  # pylint: disable=g-import-not-at-top
  if bool(_WORKDIR.value) == bool(_HF.value):
    raise UsageError("--tasks needs exactly one of --workdir or --hf")
  if _STEP.value is not None:
    raise UsageError("with --tasks, give checkpoints as --steps=STEP[,STEP...] or --steps=all")
  if _NUM_FEWSHOT.value < 0:
    raise UsageError(f"--num_fewshot must be >= 0, got {_NUM_FEWSHOT.value}")
  tasks = [harness.get_task(name) for name in _TASKS.value]  # unknown names fail before loading
  options = harness.HarnessOptions(num_fewshot=_NUM_FEWSHOT.value, seed=_SEED.value,
                                   limit=_LIMIT.value or None, batch_size=_BATCH_SIZE.value,
                                   chat_template=_CHAT_TEMPLATE.value)
  results = suite.evaluate_suite(tasks, options, workdir=_WORKDIR.value, hf=_HF.value,
                                 steps=_STEPS.value, with_efficiency=_EFFICIENCY.value)
  results["tasks"] = list(_TASKS.value)
  print(report.markdown_table(results))
  if _OUT.value:
    for kind, path in report.write_results(results, _OUT.value).items():
      print(f"wrote {kind}: {path}")
  return results


def run() -> dict | list[dict]:
  """Does what the flags ask; returns the results (also written to --output)."""
  if _TASKS.value:
    return evaluate_harness_tasks()
  if _PREDICTIONS.value or _REFERENCES.value:
    if not (_PREDICTIONS.value and _REFERENCES.value):
      raise UsageError("--predictions and --references go together")
    results = evaluate_texts(_PREDICTIONS.value, _REFERENCES.value)
    print_table(list(results.items()))
    return results

  if bool(_WORKDIR.value) == bool(_HF.value):
    raise UsageError("give exactly one of --workdir or --hf (or --predictions/--references)")
  if _TEXTS_FILE.value:
    lines = read_lines(_TEXTS_FILE.value, "texts_file")
    model, params, model_cfg, tokenizer, _ = load_model(_WORKDIR.value, _HF.value, _STEP.value)
    results = score_texts(model, params, model_cfg, tokenizer, lines, _BATCH_SIZE.value,
                          _FIRST_TOKEN.value)
    for r in results:
      print(f"{r['tokens']:6d} tokens  log-likelihood {r['log_likelihood']:12.4f}  "
            f"perplexity {r['perplexity']:10.3f}  {r['text'][:40]!r}")
    tokens = sum(r["tokens"] for r in results)
    total = sum(r["log_likelihood"] for r in results)
    print_table([("texts", len(results)), ("tokens", tokens),
                 ("perplexity", math.exp(-total / tokens))])
    return results

  if _HF.value:
    raise UsageError("dataset metrics need a training --workdir (its config names the data); "
                     "with --hf use --texts_file")
  from llm_jax import sharding  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  cfg = load.load_config(_WORKDIR.value)
  mesh = sharding.make_mesh(cfg.mesh)
  model, params, model_cfg, _, cfg = load_model(_WORKDIR.value, None, _STEP.value, mesh)
  step = _STEP.value if _STEP.value is not None else load.checkpoint_steps(_WORKDIR.value)[-1]
  results = {"step": step, "split": _SPLIT.value,
             **evaluate_split(cfg, model, params, mesh, _SPLIT.value, _MAX_BATCHES.value)}
  if model_cfg.family == "encoder":
    results["mlm_accuracy"] = results["accuracy"]
  print_table(list(results.items()))
  return results


def write_output(path: str, results) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    if isinstance(results, list):
      f.writelines(json.dumps(r) + "\n" for r in results)
    else:
      json.dump(results, f, indent=2)
      f.write("\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    results = run()
  except (UsageError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  import jax  # pylint: disable=g-import-not-at-top
  if _OUTPUT.value and jax.process_index() == 0:
    write_output(_OUTPUT.value, results)
    print(f"wrote {_OUTPUT.value}")
  return 0


if __name__ == "__main__":
  app.run(main)
