r"""A scaling-law sweep (Kaplan et al. 2020): loss against model size at a fixed token budget.

PYTHONPATH=. python experiments/scaling_laws.py

Decoder-only GPTs (gpt_tiny's layout: learned positions, pre-LN, GELU, d_ff = 4 d) of six
sizes, from 1 layer of width 16 to 4 layers of width 128 (2.4 decades of non-embedding
parameters N), each trained on the same tokens of the embedded corpus (the standard library's
source, byte tokenizer, context 64) with the same schedule. The validation loss L is fitted as
L(N) = (N_c / N)^alpha_N + L_inf (scipy.optimize.curve_fit) and plotted log-log with the fit.
Kaplan et al. report alpha_N = 0.076 for models trained to convergence on WebText2 without
an irreducible term; a sweep of tiny models on a small, fixed token budget measures a different
exponent: the number is the protocol's, not a claim about large models.

--quick: three sizes, 3 steps each, checking that the sweep, the fit and the plot are produced.
"""

import argparse
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduction_utils  # pylint: disable=g-import-not-at-top,wrong-import-position

from llm_jax import config as config_lib  # pylint: disable=wrong-import-position
from llm_jax import models  # pylint: disable=wrong-import-position
from llm_jax.training import partition  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scaling_laws")
KAPLAN_ALPHA_N = 0.076
# (layers, d_model): non-embedding parameters from ~3e3 to ~8e5.
SIZES = ((1, 16), (2, 24), (2, 48), (3, 64), (4, 96), (4, 128))
QUICK_SIZES = ((1, 8), (1, 16), (2, 16))
SEQUENCE_LENGTH = 64
BATCH_SIZE = 16


def size_config(layers: int, d_model: int, steps: int, data_dir: str, quick: bool):
  cfg = config_lib.base_config("gpt_tiny")
  heads = max(d_model // 32, 1) if d_model >= 32 else 2
  cfg.model.update(dict(num_layers=layers, d_model=d_model, num_heads=heads, d_ff=4 * d_model,
                        max_len=SEQUENCE_LENGTH, dropout_rate=0.0, attention_dropout_rate=0.0))
  cfg.data.update(dict(source="stdlib", tokenizer="byte", sequence_length=SEQUENCE_LENGTH,
                       data_dir=data_dir))
  cfg.objective.name = "clm"
  cfg.optimizer.update(dict(learning_rate=2e-3, warmup_steps=max(steps // 10, 1), b2=0.99))
  cfg.train.update(dict(batch_size=BATCH_SIZE, steps=steps, eval_every=steps,
                        eval_batches=2 if quick else 16, log_every=max(steps // 20, 1),
                        checkpoint_every=0, keep_checkpoints=1, tensorboard=False, plot=False,
                        progress_bar=not quick, seed=0))
  return cfg


def non_embedding_parameters(cfg) -> int:
  """Parameters outside the token and position embedding tables (Kaplan et al.'s N)."""
  cfg = config_lib.finalize(cfg)
  flat = partition.flat(models.abstract_params(models.build_model(cfg.model), cfg.model))
  return sum(math.prod(v.shape) for k, v in flat.items() if not k.endswith("embed/embedding"))


def power_law(n, n_c, alpha, l_inf):
  return (n_c / n) ** alpha + l_inf


def fit_power_law(params, losses) -> dict:
  """L(N) = (N_c / N)^alpha + L_inf by least squares (scipy.optimize.curve_fit)."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  params, losses = np.asarray(params, np.float64), np.asarray(losses, np.float64)
  if len(params) < 3:
    raise ValueError(f"fitting 3 parameters needs at least 3 sizes, got {len(params)}")
  start = (float(np.min(params)), 0.3, max(float(np.min(losses)) - 0.5, 0.0))
  (n_c, alpha, l_inf), _ = optimize.curve_fit(
      power_law, params, losses, p0=start, bounds=([1e-3, 1e-3, 0.0], [1e12, 5.0, np.inf]),
      maxfev=20000)
  predicted = power_law(params, n_c, alpha, l_inf)
  return {"n_c": float(n_c), "alpha_n": float(alpha), "l_inf": float(l_inf),
          "rmse": float(np.sqrt(np.mean((predicted - losses) ** 2)))}


def plot(rows, fit: dict, path: str):
  plt = reproduction_utils.pyplot()
  n = np.array([r["non_embedding_params"] for r in rows], np.float64)
  loss = np.array([r["val_loss"] for r in rows])
  grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.loglog(n, loss, "o", label="ours (validation loss)")
  ax.loglog(grid, power_law(grid, fit["n_c"], fit["alpha_n"], fit["l_inf"]), "-",
            label=f"fit: (N_c/N)^{fit['alpha_n']:.3f} + {fit['l_inf']:.2f}")
  ax.set(xlabel="non-embedding parameters N", ylabel="loss (nats / byte)",
         title=f"Loss vs size at a fixed token budget (Kaplan alpha_N = {KAPLAN_ALPHA_N})")
  ax.grid(alpha=0.3, which="both")
  ax.legend()
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--steps", type=int, default=300, help="steps per size (the token budget)")
  parser.add_argument("--out_dir", default=RESULTS)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args(argv)
  steps = 3 if args.quick else args.steps
  sizes = QUICK_SIZES if args.quick else SIZES
  workdir = args.workdir or tempfile.mkdtemp(prefix="scaling_laws_")
  data_dir = args.data_dir or config_lib.base_config().data.data_dir

  configs = [size_config(l, d, steps, data_dir, args.quick) for l, d in sizes]
  counts = [non_embedding_parameters(c) for c in configs]
  decades = math.log10(max(counts) / min(counts))
  assert args.quick or (len(counts) >= 6 and decades >= 1.5), (counts, decades)
  rows = []
  for (layers, d_model), cfg, count in zip(sizes, configs, counts):
    result, seconds, _ = reproduction_utils.timed_train(cfg, os.path.join(workdir, f"L{layers}_d{d_model}"))
    rows.append({"layers": layers, "d_model": d_model, "non_embedding_params": count,
                 "tokens": steps * BATCH_SIZE * SEQUENCE_LENGTH, "val_loss": result["eval_loss"],
                 "seconds": seconds})
    print(f"L{layers} d{d_model}: N={count:,} val loss {result['eval_loss']:.4f}", flush=True)
  fit = fit_power_law([r["non_embedding_params"] for r in rows], [r["val_loss"] for r in rows])
  summary = {**fit, "kaplan_alpha_n": KAPLAN_ALPHA_N, "decades_of_n": round(decades, 2),
             "tokens_per_size": steps * BATCH_SIZE * SEQUENCE_LENGTH}
  paths = reproduction_utils.write_table(
      args.out_dir, "scaling_laws",
      ["layers", "d_model", "non_embedding_params", "tokens", "val_loss", "seconds"], rows, summary)
  plot_path = os.path.join(args.out_dir, "scaling_laws.png")
  plot(rows, fit, plot_path)
  print(f"alpha_N = {fit['alpha_n']:.3f} (Kaplan et al.: {KAPLAN_ALPHA_N}), L_inf = {fit['l_inf']:.3f}")
  return {"rows": rows, "summary": summary, **paths, "plot": plot_path}


if __name__ == "__main__":
  main()
