r"""Attention forward+backward time and peak memory against sequence length, per kind.

  PYTHONPATH=. python experiments/attention_scaling.py [--out_dir=experiments/results]
      [--lengths=512,1024,2048,4096,8192,16384] [--max_full_length=8192] [--quick]

Kinds: xla (einsum over a dense causal mask), dot_product_attention (jax.nn), sliding
(window 256, blocked), block_sparse (block 128 + 1 global token, blocked) and linear (elu+1,
chunk 64). One causal row of `length` tokens, 4 query heads over 2 key/value heads (GQA),
head_dim 64, float32. Time: the best of --repeats runs of the jitted forward+backward (after a
warm-up run that compiles it). Memory: the compiled function's memory analysis (arguments +
outputs + temporaries), where the backend reports it. The full-attention kinds stop at
--max_full_length (their [H, L, L] scores outgrow a laptop). Writes attention_scaling.{json,md,png}
and prints the crossover: the shortest length from which linear attention stays faster than xla.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

from llm_jax.models import attention, attention_ops, linear_attention

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 64
WINDOW, BLOCK, GLOBAL, CHUNK = 256, 128, 1, 64
FULL_KINDS = ("xla", "dot_product_attention")


def attention_fn(kind: str, window: int, block: int, chunk: int):
  """(q, k, v, positions, segment_ids) -> [B, L, H, K] causal attention of this kind."""
  def dense_mask(positions, segment_ids):
    return attention.attention_mask(positions, segment_ids, positions, segment_ids, "causal")

  if kind == "xla":
    return lambda q, k, v, p, s: attention_ops.xla_attention(q, k, v, dense_mask(p, s))
  if kind == "dot_product_attention":
    return lambda q, k, v, p, s: attention_ops.dot_product_attention(q, k, v, dense_mask(p, s))
  if kind == "sliding":
    return lambda q, k, v, p, s: attention_ops.sliding_window_attention(q, k, v, p, s, window)
  if kind == "block_sparse":
    return lambda q, k, v, p, s: attention_ops.block_sparse_attention(q, k, v, p, s, block, GLOBAL)
  if kind == "linear":
    def linear(q, k, v, p, s):
      empty = linear_attention.empty_state(q.shape[0], k.shape[2], k.shape[3])
      return linear_attention.causal(q, k, v, s, empty, chunk)[0]
    return linear
  raise ValueError(f"unknown kind {kind!r}")


def forward_backward(fn):
  def loss(q, k, v, positions, segment_ids):
    return jnp.sum(fn(q, k, v, positions, segment_ids).astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def peak_bytes(compiled):
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes)


def measure(kind: str, length: int, repeats: int, window: int, block: int, chunk: int) -> dict:
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((1, length, HEADS, HEAD_DIM)) * HEAD_DIM ** -0.5,
                  jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((1, length, KV_HEADS, HEAD_DIM)), jnp.float32)
          for _ in range(2))
  positions = jnp.arange(length, dtype=jnp.int32)[None]
  segment_ids = jnp.ones((1, length), jnp.int32)
  args = (q, k, v, positions, segment_ids)
  step = forward_backward(attention_fn(kind, window, block, chunk))
  compiled = step.lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - start)
  return {"kind": kind, "length": length, "seconds": best, "peak_bytes": peak_bytes(compiled)}


def crossover(rows, fast="linear", slow="xla"):
  """Shortest measured length from which `fast` is faster than `slow` at every longer length."""
  times = {(r["kind"], r["length"]): r["seconds"] for r in rows}
  lengths = sorted({r["length"] for r in rows if (slow, r["length"]) in times
                    and (fast, r["length"]) in times})
  answer = None
  for length in reversed(lengths):
    if times[(fast, length)] < times[(slow, length)]:
      answer = length
    else:
      break
  return answer


def write_outputs(rows, out_dir, meta):
  os.makedirs(out_dir, exist_ok=True)
  cross = crossover(rows)
  with open(os.path.join(out_dir, "attention_scaling.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows, "linear_beats_xla_from_length": cross}, f, indent=2)
  kinds = list(dict.fromkeys(r["kind"] for r in rows))
  lengths = sorted({r["length"] for r in rows})
  by = {(r["kind"], r["length"]): r for r in rows}
  lines = ["| length | " + " | ".join(f"{k} ms / MiB" for k in kinds) + " |",
           "|---:|" + "---:|" * len(kinds)]
  for length in lengths:
    cells = []
    for kind in kinds:
      r = by.get((kind, length))
      if r is None:
        cells.append("—")
      else:
        mib = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2 ** 20:.1f}"
        cells.append(f"{r['seconds'] * 1e3:.1f} / {mib}")
    lines.append(f"| {length} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(f"Linear attention is faster than xla from length {cross} on."
               if cross else "Linear attention was not faster than xla at the longest lengths.")
  with open(os.path.join(out_dir, "attention_scaling.md"), "w") as f:
    f.write("\n".join(lines) + "\n")

  fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
  for kind in kinds:
    mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["length"])
    xs = [r["length"] for r in mine]
    ax_time.plot(xs, [r["seconds"] * 1e3 for r in mine], marker="o", label=kind)
    mem = [(r["length"], r["peak_bytes"] / 2 ** 20) for r in mine if r["peak_bytes"]]
    if mem:
      ax_mem.plot(*zip(*mem), marker="o", label=kind)
  for ax, label in ((ax_time, "forward+backward ms"), (ax_mem, "compiled memory MiB")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.suptitle(f"causal attention, {HEADS} heads / {KV_HEADS} kv heads, head_dim {HEAD_DIM}, "
               f"{meta['platform']}")
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "attention_scaling.png"), dpi=120)
  plt.close(fig)
  return cross


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default="experiments/results")
  parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
  parser.add_argument("--kinds", default="xla,dot_product_attention,sliding,block_sparse,linear")
  parser.add_argument("--max_full_length", type=int, default=8192)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true",
                      help="lengths 32 and 64, small window/blocks, one repeat (a smoke test)")
  args = parser.parse_args(argv)
  lengths = [int(x) for x in args.lengths.split(",")]
  window, block, chunk, repeats = WINDOW, BLOCK, CHUNK, args.repeats
  if args.quick:
    lengths, window, block, chunk, repeats = [32, 64], 8, 8, 8, 1
  kinds = args.kinds.split(",")
  jobs = [(kind, length) for length in lengths for kind in kinds
          if not (kind in FULL_KINDS and length > args.max_full_length)]
  rows = []
  for kind, length in tqdm(jobs, desc="attention scaling"):
    rows.append(measure(kind, length, repeats, window, block, chunk))
  meta = {"platform": jax.default_backend(), "heads": HEADS, "kv_heads": KV_HEADS,
          "head_dim": HEAD_DIM, "window": window, "block": block, "global": GLOBAL,
          "chunk": chunk, "repeats": repeats, "quick": args.quick}
  cross = write_outputs(rows, args.out_dir, meta)
  print(open(os.path.join(args.out_dir, "attention_scaling.md")).read())
  print(f"crossover (linear faster than xla from): {cross}")


if __name__ == "__main__":
  main()
