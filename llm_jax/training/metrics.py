"""Run metrics: console progress bar, TensorBoard events, metrics.jsonl and a loss-curve PNG."""

import json
import math
import os
import time

from absl import logging
import tqdm

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss_curve.png"


def _parse_lines(path):
  """Rows of `path`; a torn (unparsable) trailing line, left by a kill mid-write, is dropped
  with a warning. Returns (rows, whether a torn line was dropped)."""
  with open(path, "rb") as f:
    lines = [line for line in f.read().split(b"\n") if line.strip()]
  rows, torn = [], False
  for number, line in enumerate(lines, start=1):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if number < len(lines):
        raise ValueError(f"{path}:{number} is not a JSON row: {line[:80]!r}") from None
      logging.warning("%s: dropping its torn last line %d (%d bytes): %.80r", path, number,
                      len(line), line)
      torn = True
  return rows, torn


def read_rows(workdir):
  """All rows of workdir/metrics.jsonl, in file order ([] when there is none). Non-finite
  values were written as null (with the value as a string under '<key>_str')."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  return _parse_lines(path)[0]


def _encode(row):
  """One JSON line: NaN/Inf (not JSON) become null, the value kept as a string beside it."""
  out = {}
  for key, value in row.items():
    if isinstance(value, float) and not math.isfinite(value):
      out[key] = None
      out[f"{key}_str"] = str(value)
    else:
      out[key] = value
  return (json.dumps(out, allow_nan=False) + "\n").encode()


def drop_rows_after(workdir, step):
  """Keeps only rows with row['step'] <= step (and no torn last line), so a resumed run
  continues one clean record. The file is replaced atomically."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  rows, torn = _parse_lines(path)
  kept = [row for row in rows if row["step"] <= step]
  if len(kept) != len(rows) or torn:
    partial = path + ".partial"
    with open(partial, "wb") as f:
      f.write(b"".join(_encode(row) for row in kept))
    os.replace(partial, path)


class MetricsWriter:
  """Writes train and eval rows everywhere they go. Only the primary process writes files."""

  def __init__(self, workdir, *, start_step, total_steps, tokens_per_step, is_primary=True,
               progress_bar=True, tensorboard=True):
    self._workdir = workdir
    self._tokens_per_step = tokens_per_step
    self._is_primary = is_primary
    # Unbuffered appends, one write() per row: a kill can tear only the last line.
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), "ab", buffering=0) if is_primary else None
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
      self._jsonl.write(_encode(row))

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
  as_float = lambda v: math.nan if v is None else v
  train = [(r["step"], as_float(r["loss"])) for r in rows if "loss" in r]
  evals = [(r["step"], as_float(r["eval_loss"])) for r in rows if "eval_loss" in r]
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
