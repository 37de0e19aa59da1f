"""Results of a harness run: JSON (written atomically), a Markdown table, a plot against step."""

import json
import math
import os
import tempfile


def write_atomically(path: str, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it: never half-written."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _cell(value) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4g}"
  return str(value)


def markdown_table(results: dict) -> str:
  """One row per (step, task, metric): value, standard error, items; then efficiency."""
  lines = ["| step | task | metric | value | stderr | items | k-shot |",
           "|---:|---|---|---:|---:|---:|---:|"]
  for run in results["runs"]:
    for task, found in run["tasks"].items():
      for metric, value in found["metrics"].items():
        lines.append(f"| {_cell(run['step'])} | {task} | {metric} | {_cell(value)} | "
                     f"{_cell(found['stderr'].get(metric, ''))} | {found['num_items']} | "
                     f"{found['num_fewshot']} |")
  efficiency = [r for r in results["runs"] if r.get("efficiency")]
  if efficiency:
    lines += ["", "| step | prefill tokens/s | decode tokens/s | peak memory (MiB) | measured as |",
              "|---:|---:|---:|---:|---|"]
    for run in efficiency:
      e = run["efficiency"]
      lines.append(f"| {_cell(run['step'])} | {e['prefill_tokens_per_s']:.0f} | "
                   f"{e['decode_tokens_per_s']:.0f} | {e['peak_memory_bytes'] / 2**20:.0f} | "
                   f"{e['peak_memory_kind']} |")
  warnings = [(run["step"], w) for run in results["runs"] for w in run.get("warnings", [])]
  if warnings:
    lines += ["", *[f"- step {s}: {w}" for s, w in warnings]]
  return "\n".join(lines) + "\n"


def plot_against_step(results: dict, path: str) -> None:
  """metric against checkpoint step, one line per (task, metric)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = sorted(results["runs"], key=lambda r: r["step"])
  series = {}
  for run in runs:
    for task, found in run["tasks"].items():
      for metric, value in found["metrics"].items():
        series.setdefault(f"{task}/{metric}", []).append((run["step"], value))
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, points in sorted(series.items()):
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label)
  ax.set_xlabel("training step")
  ax.set_ylabel("metric")
  ax.set_title(results.get("model", ""))
  ax.legend(fontsize="small")
  fig.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png")
  os.close(fd)
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)


def write_results(results: dict, out: str) -> dict[str, str]:
  """out/results.json, out/results.md, and out/metrics_by_step.png for several steps."""
  paths = {"json": os.path.join(out, "results.json"), "markdown": os.path.join(out, "results.md")}
  write_atomically(paths["json"], json.dumps(results, indent=2, default=str) + "\n")
  write_atomically(paths["markdown"], markdown_table(results))
  if len({run["step"] for run in results["runs"]}) > 1:
    paths["plot"] = os.path.join(out, "metrics_by_step.png")
    plot_against_step(results, paths["plot"])
  return paths
