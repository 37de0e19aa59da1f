r"""Compression report: bytes, validation perplexity and decode speed of every method on a
small decoder trained on the embedded corpus, and the distillation curve.

  PYTHONPATH=. python experiments/compression_report.py [--quick] [--out=experiments/results/compression]

Trains the decoder (configs/gpt_tiny.py shape, byte tokenizer, Python stdlib corpus), then
compresses it with each method of `python -m llm_jax.compress` and measures, side by side in
one process: bytes of the parameters, validation perplexity, greedy decode tokens/s at batch 1
and 32. Separately it times int8 weight-only against float32 decoding at batch 1 on the
GPT-2-small shape (random weights). Distillation: a 2-layer student trained with KD from the
decoder and the same student without KD, for the same steps (validation loss per eval).
Writes OUT/report.json, OUT/report.md, OUT/compression.png and OUT/distillation.png.
--quick shrinks everything to seconds (for the test).
"""

import argparse
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import decoding
from llm_jax import models
from llm_jax.compress import methods
from llm_jax.compress import ptq
from llm_jax.compress import source
from llm_jax.tasks import losses
from llm_jax.training import loop

METHODS = (  # (name, methods.run options)
    ("float32", None),
    ("int8", dict(method="int8")),
    ("int4 rtn g32", dict(method="int4", group_size=32)),
    ("int4 gptq g32", dict(method="gptq", group_size=32)),
    ("int4 awq g32", dict(method="awq", group_size=32)),
    ("prune 50%", dict(method="prune", sparsity=0.5)),
    ("prune 2:4", dict(method="prune", pattern="2:4")),
    ("prune neurons 50%", dict(method="prune", pattern="neurons", sparsity=0.5)),
    ("lowrank 90% energy", dict(method="lowrank", energy=0.9)),
)


def base_cfg(quick: bool, layers: int, d_model: int, steps: int):
  cfg = config_lib.base_config("gpt_tiny")
  cfg.model.update(num_layers=layers, d_model=d_model, num_heads=4 if d_model >= 64 else 2,
                   d_ff=4 * d_model, max_len=64, scan_layers=False)
  cfg.data.update(source="stdlib", tokenizer="byte", sequence_length=32 if quick else 64)
  cfg.objective.name = "clm"
  cfg.optimizer.update(learning_rate=1e-3, warmup_steps=min(50, steps // 5))
  cfg.train.update(batch_size=8 if quick else 12, steps=steps, eval_every=max(steps // 4, 1),
                   eval_batches=2 if quick else 8, log_every=max(steps // 10, 1),
                   checkpoint_every=0, plot=False, tensorboard=False, progress_bar=not quick)
  return cfg


def perplexity(cfg, model, params, batches: int) -> float:
  apply = jax.jit(lambda p, b: losses.cross_entropy(
      model.apply({"params": p}, b["inputs"], input_segment_ids=b["input_segment_ids"],
                  input_positions=b["input_positions"])["logits"],
      b["targets"], b["loss_weights"]))
  total, weight = 0.0, 0.0
  iterator = data.make_pipeline(cfg, split="validation")
  for _ in range(batches):
    batch = next(iterator, None)
    if batch is None:
      break
    sums = apply(params, {k: batch[k] for k in ("inputs", "input_segment_ids",
                                                "input_positions", "targets", "loss_weights")})
    total, weight = total + float(sums["loss_sum"]), weight + float(sums["weight_sum"])
  return float(np.exp(total / max(weight, 1.0)))


def decode_tokens_per_s(model, params, batch: int, prompt_len: int, new_tokens: int,
                        repeats: int = 3) -> float:
  prompts = np.random.default_rng(0).integers(1, 200, (batch, prompt_len)).astype(np.int32)
  run = lambda: jax.block_until_ready(decoding.generate(
      model, params, prompts, max_new_tokens=new_tokens).tokens)
  run()
  best = min(_seconds(run) for _ in range(repeats))
  return batch * new_tokens / best


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def gpt2_small_int8_speed(quick: bool) -> dict:
  """float32 vs int8 weight-only greedy decoding at batch 1 on the GPT-2-small shape."""
  cfg = models.get_preset("gpt2_small")
  if quick:
    cfg.update(d_model=64, num_layers=2, num_heads=2, d_ff=256, vocab_size=256)
  cfg.update(max_len=64, dropout_rate=0.0, attention_dropout_rate=0.0, scan_layers=False)
  model = models.build_model(cfg)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  quantized = jax.device_put(ptq.quantize_params(params, "int8", 0))
  new_tokens = 4 if quick else 32
  f32 = decode_tokens_per_s(model, params, 1, 8, new_tokens, 2 if quick else 3)
  int8 = decode_tokens_per_s(model, quantized, 1, 8, new_tokens, 2 if quick else 3)
  return {"shape": "tiny (quick)" if quick else "gpt2_small", "float32_tokens_per_s": f32,
          "int8_tokens_per_s": int8, "speedup": int8 / f32,
          "float32_bytes": ptq.tree_bytes(params), "int8_bytes": ptq.tree_bytes(quantized)}


def eval_curve(workdir: str):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="experiments/results/compression")
  parser.add_argument("--steps", type=int, default=1500, help="decoder training steps")
  parser.add_argument("--student_steps", type=int, default=1000)
  args = parser.parse_args()
  quick, out = args.quick, args.out
  os.makedirs(out, exist_ok=True)
  steps = 10 if quick else args.steps
  teacher_dir = os.path.join(out, "workdirs", "decoder")
  shutil.rmtree(os.path.join(out, "workdirs"), ignore_errors=True)
  teacher_cfg = base_cfg(quick, 2 if quick else 4, 32 if quick else 128, steps)
  loop.train(teacher_cfg, teacher_dir)

  cfg, model, params, tokenizer, _ = source.load(teacher_dir, None)
  eval_batches = 2 if quick else 16
  new_tokens = 2 if quick else 32
  repeats = 1 if quick else 3
  rows = []
  for name, options in METHODS:
    if options is None:
      new_params, new_cfg = params, cfg
    else:
      new_params, new_cfg, _ = methods.run(cfg, model, params, tokenizer,
                                           calibration_batches=2 if quick else 8, **options)
    new_model = models.build_model(new_cfg.model)
    new_params = jax.device_put(new_params)
    rows.append({
        "method": name, "bytes": ptq.tree_bytes(new_params),
        "perplexity": perplexity(new_cfg, new_model, new_params, eval_batches),
        "tokens_per_s_b1": decode_tokens_per_s(new_model, new_params, 1, 8, new_tokens, repeats),
        "tokens_per_s_b32": decode_tokens_per_s(new_model, new_params, 32, 8, new_tokens,
                                                repeats)})
  float_row = rows[0]
  for row in rows:
    row["bytes_ratio"] = row["bytes"] / float_row["bytes"]
    row["perplexity_change"] = row["perplexity"] / float_row["perplexity"] - 1.0

  student_steps = 4 if quick else args.student_steps
  curves = {}
  for label, teacher in (("KD", f"workdir:{teacher_dir}"), ("no KD", "")):
    student = base_cfg(quick, 1 if quick else 2, 32 if quick else 64, student_steps)
    student.distill.teacher = teacher
    workdir = os.path.join(out, "workdirs", "student_kd" if teacher else "student")
    loop.train(student, workdir)
    curves[label] = eval_curve(workdir)

  report = {"quick": quick, "decoder_steps": steps, "methods": rows,
            "gpt2_small_int8_batch1": gpt2_small_int8_speed(quick),
            "distillation": {"steps": student_steps, "curves": curves}}
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  write_markdown(report, os.path.join(out, "report.md"))
  plot(report, out)
  print(open(os.path.join(out, "report.md")).read())


def write_markdown(report, path):
  lines = ["| method | bytes | x float | val. perplexity | change | tok/s b=1 | tok/s b=32 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for r in report["methods"]:
    lines.append(f"| {r['method']} | {r['bytes']:,} | {r['bytes_ratio']:.3f} | "
                 f"{r['perplexity']:.3f} | {100 * r['perplexity_change']:+.2f}% | "
                 f"{r['tokens_per_s_b1']:.1f} | {r['tokens_per_s_b32']:.1f} |")
  s = report["gpt2_small_int8_batch1"]
  lines += ["", f"int8 vs float32 greedy decode, batch 1, {s['shape']}: "
            f"{s['int8_tokens_per_s']:.1f} vs {s['float32_tokens_per_s']:.1f} tokens/s "
            f"({s['speedup']:.2f}x), {s['int8_bytes']:,} vs {s['float32_bytes']:,} bytes", ""]
  d = report["distillation"]
  lines.append(f"distillation ({d['steps']} steps), final validation loss: " + ", ".join(
      f"{k} {v[-1][1]:.4f}" for k, v in d["curves"].items() if v))
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def plot(report, out):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = report["methods"]
  names = [r["method"] for r in rows]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
  for ax, key, title in zip(axes, ("bytes_ratio", "perplexity", "tokens_per_s_b1",
                                   "tokens_per_s_b32"),
                            ("bytes / float32", "validation perplexity", "decode tok/s, batch 1",
                             "decode tok/s, batch 32")):
    ax.bar(range(len(rows)), [r[key] for r in rows])
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "compression.png"), dpi=110)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, curve in report["distillation"]["curves"].items():
    if curve:
      ax.plot(*zip(*curve), marker="o", label=label)
  ax.set_xlabel("step")
  ax.set_ylabel("validation loss")
  ax.set_title("student with and without KD")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out, "distillation.png"), dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
