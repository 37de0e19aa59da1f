r"""DPO step time and memory: our step with the reference in the step or precomputed, and trl's
DPOTrainer on the same LLaMA-shaped model in PyTorch.

PYTHONPATH=. python experiments/benchmark_dpo.py             # d 256, 4 layers, 8 pairs x 128
PYTHONPATH=. python experiments/benchmark_dpo.py --quick     # a tiny shape, seconds

Each variant runs in its own child process, in turn for --rounds rounds; the table takes each
variant's median step time. All see the same random preference pairs (prompt 32 tokens, each
completion 96), dropout 0, AdamW; trl's step is one `Trainer.training_step` + optimizer step
of DPOTrainer (its own collator, its reference model in the step or precomputed). 'XLA MB' is
our compiled step's memory (arguments + outputs + temporaries - aliased); 'peak RSS MB' the
child's peak resident memory.

Writes experiments/results/benchmark_dpo.{md,json,png} (or --out).
"""

import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from llm_jax import cli_flags

FLAGS = cli_flags.flag_values(__name__)
_QUICK = flags.DEFINE_bool("quick", False, "A tiny model and few steps (for tests).",
                           flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps per variant and round.", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds over the variants.", flag_values=FLAGS)
_PAIRS = flags.DEFINE_integer("pairs", 8, "Preference pairs per step.", flag_values=FLAGS)
_VARIANTS = flags.DEFINE_list("variants", ["in_step", "precomputed", "trl", "trl_precomputed"],
                              "Variants to run.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "experiments/results", "Output directory.", flag_values=FLAGS)
_CHILD = flags.DEFINE_string("child", None, "Internal: run one variant and print JSON.",
                             flag_values=FLAGS)

VARIANTS = ("in_step", "precomputed", "trl", "trl_precomputed")
VOCAB = 384  # the byte tokenizer has 365 ids


def shape(quick: bool) -> dict:
  if quick:
    return dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, d_ff=64, prompt=8,
                completion=8)
  return dict(d_model=256, num_layers=4, num_heads=4, num_kv_heads=4, d_ff=1024, prompt=32,
              completion=96)


def pair_tokens(quick: bool, pairs: int):
  """(prompt, chosen, rejected) token arrays of random pairs (ids 3.. are plain tokens)."""
  s = shape(quick)
  rng = np.random.default_rng(0)
  prompt = rng.integers(3, VOCAB, (pairs, s["prompt"]))
  chosen = rng.integers(3, VOCAB, (pairs, s["completion"]))
  rejected = rng.integers(3, VOCAB, (pairs, s["completion"]))
  return prompt, chosen, rejected


def experiment_config(quick: bool, pairs: int, reference: str):
  from llm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  s = shape(quick)
  cfg = config_lib.base_config("llama_tiny")
  cfg.model.update(vocab_size=VOCAB, d_model=s["d_model"], num_layers=s["num_layers"],
                   num_heads=s["num_heads"], num_kv_heads=s["num_kv_heads"], d_ff=s["d_ff"],
                   head_dim=s["d_model"] // s["num_heads"], dropout_rate=0.0,
                   attention_dropout_rate=0.0)
  cfg.task.name = "dpo"
  cfg.task.reference = reference
  cfg.data.sequence_length = s["prompt"] + s["completion"]
  cfg.train.batch_size = 2 * pairs
  cfg.optimizer.update(warmup_steps=0, learning_rate=1e-4)
  return cfg


def _batch(quick, pairs):
  """Our [2P, L] rows: chosen at even rows; loss on the completion (and its next tokens)."""
  prompt, chosen, rejected = pair_tokens(quick, pairs)
  rows = np.stack([np.concatenate([prompt, chosen], 1), np.concatenate([prompt, rejected], 1)], 1)
  rows = rows.reshape(2 * pairs, -1)
  length = rows.shape[1] - 1
  weights = np.zeros((2 * pairs, length), np.float32)
  weights[:, prompt.shape[1] - 1:] = 1.0
  return {"inputs": rows[:, :-1].astype(np.int32), "targets": rows[:, 1:].astype(np.int32),
          "loss_weights": weights, "input_segment_ids": np.ones((2 * pairs, length), np.int32),
          "input_positions": np.broadcast_to(np.arange(length, dtype=np.int32),
                                             (2 * pairs, length)).copy()}


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10


def run_ours(reference, quick, pairs, steps):
  # pylint: disable=g-import-not-at-top
  import jax
  from llm_jax import config as config_lib
  from llm_jax import models
  from llm_jax import sharding
  from llm_jax.tasks import preference
  from llm_jax.training import train_step as train_step_lib
  # pylint: enable=g-import-not-at-top
  cfg = config_lib.finalize(experiment_config(quick, pairs, reference))
  mesh = sharding.make_mesh(cfg.mesh)
  rules = sharding.rules_from_config(cfg)
  model = models.build_model(cfg.model)
  layout = train_step_lib.state_layout(cfg, model, mesh)
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0),
                                                       layout=layout)
  batch = _batch(quick, pairs)
  if reference == "precomputed":
    params = train_step_lib.full_params(state)
    logits = model.apply({"params": params}, **{k: batch[k] for k in (
        "inputs", "input_segment_ids", "input_positions")})["logits"]
    batch["reference_logps"] = np.asarray(preference.sequence_logps(
        logits, batch["targets"], batch["loss_weights"])[0])
  batch = sharding.make_global_batch(batch, mesh, rules)
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings, layout=layout)
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  xla_mb = None
  if memory is not None:
    xla_mb = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2 ** 20
  for _ in range(2):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - start) / steps
  return dict(step_s=seconds, compile_s=compile_s, xla_mb=xla_mb, loss=float(metrics["loss"]))


def run_trl(precompute, quick, pairs, steps):
  """trl's DPOTrainer on LlamaForCausalLM of the same shape and pairs."""
  # pylint: disable=g-import-not-at-top
  import datasets
  import tokenizers
  import torch
  import transformers
  import trl
  # pylint: enable=g-import-not-at-top
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  s = shape(quick)
  model_cfg = transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=s["d_model"], intermediate_size=s["d_ff"],
      num_hidden_layers=s["num_layers"], num_attention_heads=s["num_heads"],
      num_key_value_heads=s["num_kv_heads"], max_position_embeddings=512,
      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
  model = transformers.LlamaForCausalLM(model_cfg)
  vocab = {f"t{i}": i for i in range(VOCAB)}
  backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0"))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend, pad_token="t0", bos_token="t1", eos_token="t2", unk_token="t0")
  prompt, chosen, rejected = pair_tokens(quick, pairs)
  text = lambda ids: " ".join(f"t{i}" for i in ids)
  rows = [{"prompt": text(p), "chosen": " " + text(c[:-1]), "rejected": " " + text(r[:-1])}
          for p, c, r in zip(prompt, chosen, rejected)]
  dataset = datasets.Dataset.from_list(rows * (steps + 3))
  args = trl.DPOConfig(
      output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "benchmark_dpo_trl"),
      per_device_train_batch_size=pairs, max_steps=steps + 2, learning_rate=1e-4,
      lr_scheduler_type="constant", warmup_steps=0, logging_steps=10 ** 6, save_strategy="no",
      report_to=[], use_cpu=True, dataloader_num_workers=0, beta=0.1,
      max_length=s["prompt"] + s["completion"], precompute_ref_log_probs=precompute,
      disable_dropout=True, seed=0)
  times = []

  class StepTimer(transformers.TrainerCallback):

    def on_step_begin(self, *unused_args, **unused_kwargs):
      self.start = time.perf_counter()

    def on_step_end(self, *unused_args, **unused_kwargs):
      times.append(time.perf_counter() - self.start)

  reference = copy.deepcopy(model).eval()
  trainer = trl.DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset,
                           processing_class=tokenizer, callbacks=[StepTimer()])
  result = trainer.train()
  timed = times[2:]
  return dict(step_s=float(np.mean(timed)), compile_s=0.0, xla_mb=None,
              loss=float(result.training_loss))


def run_child(variant: str) -> dict:
  args = (_QUICK.value, _PAIRS.value, _STEPS.value)
  if variant.startswith("trl"):
    out = run_trl(variant == "trl_precomputed", *args)
  else:
    out = run_ours(variant, *args)
  return dict(variant=variant, peak_rss_mb=_peak_rss_mb(), **out)


def spawn(variant: str, argv: list[str]) -> dict:
  command = [sys.executable, os.path.abspath(__file__), f"--child={variant}"] + argv
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  if result.returncode:
    raise RuntimeError(f"variant {variant} failed:\n{result.stderr[-4000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict]) -> list[dict]:
  rows = []
  for variant in dict.fromkeys(r["variant"] for r in runs):
    mine = [r for r in runs if r["variant"] == variant]
    rows.append({**mine[-1], "step_s": statistics.median(r["step_s"] for r in mine),
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in mine)})
  return rows


def ratios(rows: list[dict]) -> dict[str, float]:
  by = {r["variant"]: r for r in rows}
  out = {}
  for ours, theirs in (("in_step", "trl"), ("precomputed", "trl_precomputed")):
    if ours in by and theirs in by:
      out[f"{ours}_speedup_vs_{theirs}"] = by[theirs]["step_s"] / by[ours]["step_s"]
  if "in_step" in by and "precomputed" in by and by["in_step"]["xla_mb"]:
    out["precomputed_xla_memory_vs_in_step"] = by["precomputed"]["xla_mb"] / by["in_step"]["xla_mb"]
    out["precomputed_step_time_vs_in_step"] = by["precomputed"]["step_s"] / by["in_step"]["step_s"]
  return out


def markdown(rows, ratio, title) -> str:
  lines = [f"### {title}", "", "| variant | step ms | XLA MB | peak RSS MB | loss |",
           "|---|---|---|---|---|"]
  for r in rows:
    xla = "" if r["xla_mb"] is None else f"{r['xla_mb']:.1f}"
    lines.append(f"| {r['variant']} | {1e3 * r['step_s']:.1f} | {xla} | "
                 f"{r['peak_rss_mb']:.0f} | {r['loss']:.4f} |")
  lines += [""] + [f"- {k}: {v:.2f}x" for k, v in ratio.items()]
  return "\n".join(lines) + "\n"


def plot(rows, path, title) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.bar([r["variant"] for r in rows], [1e3 * r["step_s"] for r in rows], color="tab:blue")
  ax.set_ylabel("DPO step (ms)")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _CHILD.value:
    print(json.dumps(run_child(_CHILD.value)))
    return
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}; expected {VARIANTS}")
  child_argv = [f"--quick={_QUICK.value}", f"--steps={_STEPS.value}", f"--pairs={_PAIRS.value}"]
  runs = []
  for round_index in range(_ROUNDS.value):
    for variant in _VARIANTS.value:
      run = spawn(variant, child_argv)
      print(f"round {round_index + 1}: {variant:16s} {1e3 * run['step_s']:8.1f} ms/step", flush=True)
      runs.append(run)
  rows = summarize(runs)
  ratio = ratios(rows)
  s = shape(_QUICK.value)
  title = (f"DPO step, LLaMA-shaped d {s['d_model']} x {s['num_layers']} layers, {_PAIRS.value} "
           f"pairs x {s['prompt'] + s['completion']} tokens, {os.cpu_count()} CPU cores")
  name = "benchmark_dpo_quick" if _QUICK.value else "benchmark_dpo"
  os.makedirs(_OUT.value, exist_ok=True)
  base = os.path.join(_OUT.value, name)
  with open(base + ".json", "w") as f:
    json.dump({"title": title, "rows": rows, "ratios": ratio}, f, indent=2)
  with open(base + ".md", "w") as f:
    f.write(markdown(rows, ratio, title))
  plot(rows, base + ".png", title)
  print(markdown(rows, ratio, title))


if __name__ == "__main__":
  app.run(main)
