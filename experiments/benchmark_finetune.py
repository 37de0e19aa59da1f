r"""Full fine-tuning vs LoRA vs QLoRA, side by side, and Hugging Face peft LoRA in PyTorch.

PYTHONPATH=. python experiments/benchmark_finetune.py                 # GPT-2 small shape
PYTHONPATH=. python experiments/benchmark_finetune.py --quick         # a tiny shape, seconds

Each variant runs in its own child process (so its peak resident memory is its own, read from
the kernel's rusage of that child): our train step with every parameter trainable ('full'),
LoRA rank --rank on the attention's query, key and value projections with the base frozen
('lora'), the same with the frozen base kernels stored in NF4 ('qlora'), and peft's LoRA on
GPT2LMHeadModel's fused c_attn (the same q, k, v projections) with torch.optim.AdamW
('peft_lora'). All train on the same random batch with dropout 0. 'XLA state MB' is the
compiled step's arguments (parameters, frozen base, optimizer state, batch). The children run in
--rounds rounds, in turn, and the table takes each variant's median step time. For our steps
the compiled step's XLA memory (arguments + outputs + temporaries - aliased) is reported too.

Writes experiments/results/benchmark_finetune.{md,json,png} (or --out).
"""

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
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per variant and round.", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds over the variants.", flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 4, "Global batch size.", flag_values=FLAGS)
_SEQ = flags.DEFINE_integer("seq", 128, "Sequence length.", flag_values=FLAGS)
_RANK = flags.DEFINE_integer("rank", 8, "LoRA rank.", flag_values=FLAGS)
_VARIANTS = flags.DEFINE_list("variants", ["full", "lora", "qlora", "peft_lora"],
                              "Variants to run.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "experiments/results", "Output directory.", flag_values=FLAGS)
_SCAN = flags.DEFINE_bool("scan_layers", False, "Our models with nn.scan over layers.",
                          flag_values=FLAGS)
_CHILD = flags.DEFINE_string("child", None, "Internal: run one variant and print JSON.",
                             flag_values=FLAGS)

LORA_TARGETS = r"attention/(query|key|value)$"
VARIANTS = ("full", "lora", "qlora", "peft_lora")


def experiment_config(variant: str, quick: bool, batch: int, seq: int, rank: int,
                      scan_layers: bool = False):
  """The GPT-2-small (or, quick, a tiny GPT-2) experiment config of one of our variants."""
  from llm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config("gpt_tiny" if quick else "gpt2_small")
  cfg.model.update(vocab_size=512 if quick else 50257, dropout_rate=0.0,
                   attention_dropout_rate=0.0, max_len=max(seq, 64))
  if quick:
    cfg.model.update(d_model=64, num_layers=2, num_heads=2, d_ff=256)
  cfg.model.scan_layers = scan_layers
  cfg.data.sequence_length = seq
  cfg.train.batch_size = batch
  cfg.optimizer.warmup_steps = 0
  if variant in ("lora", "qlora"):
    cfg.model.peft.lora_rank = rank
    cfg.model.peft.lora_alpha = 2.0 * rank
    cfg.model.peft.lora_targets = LORA_TARGETS
  if variant == "qlora":
    cfg.model.peft.base_quantization = "nf4"
  return cfg


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10


def run_ours(variant, quick, batch, seq, rank, steps, scan_layers=False):
  """Step time, trainable parameters and XLA step memory of one of our variants."""
  # pylint: disable=g-import-not-at-top
  import jax
  from llm_jax import models
  from llm_jax import sharding
  from llm_jax.training import partition
  from llm_jax.training import train_step as train_step_lib
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import benchmark
  # pylint: enable=g-import-not-at-top
  cfg = experiment_config(variant, quick, batch, seq, rank, scan_layers)
  model = models.build_model(cfg.model)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  state, shardings = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0))
  np_batch = benchmark.random_batch(cfg, np.random.default_rng(0))
  batch_arrays = sharding.make_global_batch(np_batch, mesh, sharding.rules_from_config(cfg))
  step = train_step_lib.make_train_step(cfg, model, mesh, shardings)
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, batch_arrays, rng).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  xla_mb = state_mb = None
  if memory is not None:
    xla_mb = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2 ** 20
    state_mb = memory.argument_size_in_bytes / 2 ** 20
  for _ in range(2):
    state, metrics = compiled(state, batch_arrays, rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch_arrays, rng)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  return dict(step_s=seconds, trainable=partition.count(state.params),
              total=partition.count(models.abstract_params(model, cfg.model)),
              compile_s=compile_s, xla_step_mb=xla_mb, xla_state_mb=state_mb,
              loss=float(metrics["loss"]))


def run_peft(quick, batch, seq, rank, steps):
  """Hugging Face peft LoRA on GPT2LMHeadModel: same shape, targets, optimizer and batch."""
  # pylint: disable=g-import-not-at-top
  import peft
  import torch
  import transformers
  # pylint: enable=g-import-not-at-top
  cfg = experiment_config("lora", quick, batch, seq, rank)
  m, opt = cfg.model, cfg.optimizer
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=m.vocab_size, n_positions=m.max_len, n_embd=m.d_model, n_layer=m.num_layers,
      n_head=m.num_heads, n_inner=m.d_ff, activation_function="gelu_new", resid_pdrop=0.0,
      embd_pdrop=0.0, attn_pdrop=0.0))
  model = peft.get_peft_model(model, peft.LoraConfig(
      r=rank, lora_alpha=2 * rank, target_modules=["c_attn"], lora_dropout=0.0,
      fan_in_fan_out=True))
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trainable, lr=opt.learning_rate, betas=(opt.b1, opt.b2),
                                eps=opt.eps, weight_decay=opt.weight_decay)
  rng = np.random.default_rng(0)
  inputs = torch.from_numpy(rng.integers(0, m.vocab_size, (batch, seq))).long()
  targets = torch.from_numpy(rng.integers(0, m.vocab_size, (batch, seq))).long()

  def step():
    logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, opt.grad_clip_norm)
    optimizer.step()
    return loss

  for _ in range(2):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  loss.item()
  seconds = (time.perf_counter() - start) / steps
  return dict(step_s=seconds, trainable=sum(p.numel() for p in trainable),
              total=sum(p.numel() for p in model.parameters()), compile_s=0.0,
              xla_step_mb=None, xla_state_mb=None, loss=loss.item())


def run_child(variant: str) -> dict:
  args = (_QUICK.value, _BATCH.value, _SEQ.value, _RANK.value, _STEPS.value)
  if variant == "peft_lora":
    result = run_peft(*args)
  else:
    result = run_ours(variant, *args, scan_layers=_SCAN.value)
  return {**result, "variant": variant}


def spawn(variant: str, argv: list[str]) -> dict:
  """Runs one variant in a child process; adds the child's peak RSS."""
  command = [sys.executable, os.path.abspath(__file__), *argv, f"--child={variant}"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
  process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
  out = process.stdout.read()
  _, status, usage = os.wait4(process.pid, 0)
  if status != 0:
    raise RuntimeError(f"variant {variant} failed (status {status}); command: {' '.join(command)}")
  result = json.loads(out.decode().strip().splitlines()[-1])
  result["peak_rss_mb"] = usage.ru_maxrss / 2 ** 10
  return result


def summarize(runs: list[dict], tokens_per_step: int) -> list[dict]:
  """One row per variant: median step time over rounds, tokens/s, memory, parameters."""
  rows = []
  for variant in dict.fromkeys(r["variant"] for r in runs):
    mine = [r for r in runs if r["variant"] == variant]
    step_s = statistics.median(r["step_s"] for r in mine)
    rows.append(dict(variant=variant, step_ms=1e3 * step_s, tokens_per_s=tokens_per_step / step_s,
                     peak_rss_mb=max(r["peak_rss_mb"] for r in mine),
                     xla_step_mb=mine[0]["xla_step_mb"], xla_state_mb=mine[0]["xla_state_mb"],
                     trainable=mine[0]["trainable"],
                     total=mine[0]["total"]))
  return rows


def ratios(rows: list[dict]) -> dict[str, float]:
  """The ratios the targets are stated in (present variants only)."""
  by = {r["variant"]: r for r in rows}
  out = {}
  if "full" in by and "lora" in by:
    out["lora_step_time_vs_full"] = by["lora"]["step_ms"] / by["full"]["step_ms"]
    out["lora_peak_rss_vs_full"] = by["lora"]["peak_rss_mb"] / by["full"]["peak_rss_mb"]
    if by["full"]["xla_step_mb"] and by["lora"]["xla_step_mb"]:
      out["lora_xla_memory_vs_full"] = by["lora"]["xla_step_mb"] / by["full"]["xla_step_mb"]
  if "lora" in by and "peft_lora" in by:
    out["lora_tokens_per_s_vs_peft"] = by["lora"]["tokens_per_s"] / by["peft_lora"]["tokens_per_s"]
  return out


def markdown(rows: list[dict], ratio: dict[str, float], title: str) -> str:
  lines = [f"{title}", "", "| variant | step ms | tokens/s | peak RSS MB | XLA step MB | "
           "XLA state MB | trainable params | trainable % |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  cell = lambda v: "-" if v is None else f"{v:,.0f}"
  for r in rows:
    lines.append(f"| {r['variant']} | {r['step_ms']:,.1f} | {r['tokens_per_s']:,.0f} | "
                 f"{r['peak_rss_mb']:,.0f} | {cell(r['xla_step_mb'])} | "
                 f"{cell(r['xla_state_mb'])} | {r['trainable']:,} | "
                 f"{100 * r['trainable'] / r['total']:.2f} |")
  lines.append("")
  lines += [f"- {k}: {v:.2f}x" for k, v in ratio.items()]
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
  names = [r["variant"] for r in rows]
  for ax, key, label in zip(axes, ("step_ms", "peak_rss_mb", "trainable"),
                            ("step time (ms)", "peak RSS (MB)", "trainable parameters")):
    ax.bar(names, [r[key] for r in rows], color="#4c72b0")
    ax.set_title(label)
    ax.tick_params(axis="x", rotation=20)
  axes[2].set_yscale("log")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CHILD.value:
    print(json.dumps(run_child(_CHILD.value)))
    return 0
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}; known: {VARIANTS}")
  child_argv = [f"--steps={_STEPS.value}", f"--batch={_BATCH.value}", f"--seq={_SEQ.value}",
                f"--rank={_RANK.value}"] + (["--quick"] if _QUICK.value else []) + (
                    ["--scan_layers"] if _SCAN.value else [])
  runs = []
  total = _ROUNDS.value * len(_VARIANTS.value)
  for round_index in range(_ROUNDS.value):
    for variant in _VARIANTS.value:
      result = spawn(variant, child_argv)
      runs.append(result)
      print(f"[{len(runs)}/{total}] round {round_index + 1} {variant}: "
            f"{1e3 * result['step_s']:.1f} ms/step, peak RSS {result['peak_rss_mb']:.0f} MB",
            flush=True)
  rows = summarize(runs, _BATCH.value * _SEQ.value)
  shape = "tiny GPT-2 (--quick)" if _QUICK.value else "GPT-2 small (124M)"
  title = (f"Fine-tuning step on {shape}, batch {_BATCH.value} x {_SEQ.value} tokens, LoRA rank "
           f"{_RANK.value}, {os.cpu_count()} CPU cores")
  ratio = ratios(rows)
  os.makedirs(_OUT.value, exist_ok=True)
  stem = os.path.join(_OUT.value, "benchmark_finetune" + ("_quick" if _QUICK.value else ""))
  table = markdown(rows, ratio, title)
  with open(stem + ".md", "w") as f:
    f.write(table)
  with open(stem + ".json", "w") as f:
    json.dump({"title": title, "rows": rows, "ratios": ratio, "runs": runs}, f, indent=2)
  plot(rows, stem + ".png", title)
  print(table)
  print(f"wrote {stem}.md, {stem}.json, {stem}.png")
  return 0


if __name__ == "__main__":
  app.run(main)
