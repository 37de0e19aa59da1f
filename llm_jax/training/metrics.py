"""Run metrics: console progress bar, TensorBoard events, metrics.jsonl and a loss-curve PNG."""

import json
import math
import os
import time

import tqdm

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss_curve.png"


def read_rows(workdir):
  """All rows of workdir/metrics.jsonl, in file order ([] when there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def drop_rows_after(workdir, step):
  """Keeps only rows with row['step'] <= step, so a resumed run continues one clean record."""
  path = os.path.join(workdir, METRICS_FILE)
  rows = read_rows(workdir)
  kept = [row for row in rows if row["step"] <= step]
  if len(kept) != len(rows):
    with open(path, "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in kept)


class MetricsWriter:
  """Writes train and eval rows everywhere they go. Only the primary process writes files."""

  def __init__(self, workdir, *, start_step, total_steps, tokens_per_step, is_primary=True,
               progress_bar=True, tensorboard=True):
    self._workdir = workdir
    self._tokens_per_step = tokens_per_step
    self._is_primary = is_primary
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a") if is_primary else None
    self._tb = None
    if is_primary and tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                          disable=not (is_primary and progress_bar))
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def _write(self, row):
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(row) + "\n")
      self._jsonl.flush()

  def write_train(self, step, metrics):
    """metrics: host scalars of the step `step` (loss, learning_rate, grad_norm, ...)."""
    now = time.perf_counter()
    steps_done = step - self._last_step
    elapsed = max(now - self._last_time, 1e-9)
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    row["tokens_per_sec"] = steps_done * self._tokens_per_step / elapsed
    row["steps_per_sec"] = steps_done / elapsed
    self._last_step, self._last_time = step, now
    self._write(row)
    if self._tb is not None:
      for key, value in row.items():
        if key != "step":
          self._tb.add_scalar(f"train/{key}", value, step)
    self._bar.update(steps_done)
    self._bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_sec']:.0f}")
    return row

  def write_eval(self, step, loss_sum, weight_sum, correct_sum, extra=None):
    """Turns summed eval statistics into eval_loss, eval_perplexity and eval_accuracy; `extra`
    ({name: value}, e.g. the task's macro_f1 or bleu) is written beside them as eval_<name>."""
    if weight_sum <= 0:
      raise ValueError(f"eval at step {step}: weight_sum is {weight_sum}, no target tokens")
    loss = float(loss_sum) / float(weight_sum)
    row = {
        "step": int(step),
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 80.0)),
        "eval_accuracy": float(correct_sum) / float(weight_sum),
        "eval_tokens": float(weight_sum),
        **{f"eval_{k}": float(v) for k, v in (extra or {}).items()},
    }
    self._write(row)
    if self._tb is not None:
      for key, value in row.items():
        if key != "step":
          self._tb.add_scalar(f"eval/{key[len('eval_'):]}", value, step)
    if self._is_primary:
      shown = "".join(f" {k} {v:.4f}" for k, v in (extra or {}).items())
      self._bar.write(f"step {step}: eval_loss {loss:.4f} perplexity {row['eval_perplexity']:.2f} "
                      f"accuracy {row['eval_accuracy']:.4f}{shown}")
    # Eval time is not training time.
    self._last_time = time.perf_counter()
    return row

  def close(self):
    self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()


def plot_loss_curves(workdir, title=""):
  """Writes train and eval loss vs step from metrics.jsonl to workdir/loss_curve.png."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = read_rows(workdir)
  train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  if train:
    ax.plot(*zip(*train), label="train loss", linewidth=1.2)
  if evals:
    ax.plot(*zip(*evals), "o-", label="eval loss", linewidth=1.5)
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats / target token)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  path = os.path.join(workdir, PLOT_FILE)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path
