r"""Alignment benchmarks. --part=rollout: GRPO rollout tokens/s, G samples x prompts through our
compiled KV-cache sampler against Hugging Face `generate` on the same model in PyTorch, which
is how trl's GRPOTrainer (and its PPO/RLOO trainers) generate without vLLM.

PYTHONPATH=. python experiments/benchmark_alignment.py --part=rollout     # llama_tiny + d256x4
PYTHONPATH=. python experiments/benchmark_alignment.py --part=rollout --quick   # seconds

Both sides run the same weights (ours exported with `convert.to_hf`, loaded as a
LlamaForCausalLM), the same left-padded arithmetic prompts repeated G times (trl repeats each
prompt num_generations times), sampling at temperature 1, and exactly --new_tokens new tokens
per row (no EOS for us, min_new_tokens for transformers), so both produce the same token count.
They alternate for --rounds rounds in one process; the table takes each side's median. Times
exclude our one-time compilation (reported apart): tokens/s = rows * new_tokens / seconds.

Writes experiments/results/benchmark_alignment_rollout.{json,md,png} (or --out).
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from llm_jax import cli_flags

FLAGS = cli_flags.flag_values(__name__)
_PART = flags.DEFINE_enum("part", "rollout", ["rollout", "dpo", "all"], "Which benchmark.",
                          flag_values=FLAGS)
_QUICK = flags.DEFINE_bool("quick", False, "One tiny shape, few rows (for tests).",
                           flag_values=FLAGS)
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per rollout batch.", flag_values=FLAGS)
_GENERATIONS = flags.DEFINE_integer("generations", 8, "G samples per prompt.", flag_values=FLAGS)
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 32, "New tokens per sample.", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds per side.", flag_values=FLAGS)
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.",
                                      flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", "experiments/results", "Output directory.", flag_values=FLAGS)

# shape name -> overrides of the llama_tiny preset
SHAPES = {
    "llama_tiny (d64 x2)": dict(),
    "llama d256 x4": dict(d_model=256, num_layers=4, num_heads=8, num_kv_heads=4, d_ff=1024),
}


def _model(overrides, max_len):
  from llm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from llm_jax import models  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config("llama_tiny")
  cfg.model.update(overrides)
  cfg.model.update(vocab_size=384, max_len=max_len)
  model = models.build_model(cfg.model)
  params = jax.jit(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"])(
      jax.random.key(0))
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return cfg.model, model, nn.unbox(params)


def _prompt_rows(num_prompts, generations):
  from llm_jax import data  # pylint: disable=g-import-not-at-top
  from llm_jax.alignment import rollout  # pylint: disable=g-import-not-at-top
  from llm_jax.data import arithmetic  # pylint: disable=g-import-not-at-top
  tokenizer = data.make_tokenizer(data.default_data_config())
  problems = arithmetic.make_problems(num_prompts, seed=0)
  return rollout.repeat_prompts([tokenizer.encode(p["prompt"]) for p in problems], generations)


def _ours(model, params, rows, new_tokens):
  """(sample(round) -> None, compile seconds) with our sampler, as the RL loop calls it."""
  from llm_jax.alignment import rollout  # pylint: disable=g-import-not-at-top
  opts = rollout.SamplerOptions(max_new_tokens=new_tokens, eos_id=None, vocab_limit=365)
  run = lambda i: rollout.sample(model, params, rows, jax.random.key(i), opts)
  start = time.perf_counter()
  run(-1)
  return run, time.perf_counter() - start


def _hf(model_cfg, params, rows, new_tokens, threads):
  """sample(round) -> None with transformers generate on the exported model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from llm_jax import convert  # pylint: disable=g-import-not-at-top
  from llm_jax import decoding  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  folder = tempfile.mkdtemp(prefix="benchmark_alignment_hf_")
  convert.to_hf(model_cfg, jax.device_get(params), folder)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
  tokens, segments = decoding.left_pad(rows, pad_id=0)
  inputs = {"input_ids": torch.tensor(tokens, dtype=torch.long),
            "attention_mask": torch.tensor(segments, dtype=torch.long)}

  def run(i):
    torch.manual_seed(i)
    with torch.no_grad():
      out = hf_model.generate(**inputs, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=0, use_cache=True)
    assert out.shape[1] == tokens.shape[1] + new_tokens
  run(-1)
  return run


def rollout_benchmark(quick: bool) -> list[dict]:
  """One row per shape: our and HF's median rollout tokens/s and their ratio."""
  prompts, generations = (4, 4) if quick else (_PROMPTS.value, _GENERATIONS.value)
  new_tokens = 8 if quick else _NEW_TOKENS.value
  rounds = 1 if quick else _ROUNDS.value
  shapes = dict(list(SHAPES.items())[:1]) if quick else SHAPES
  rows = _prompt_rows(prompts, generations)
  results = []
  for name, overrides in shapes.items():
    model_cfg, model, params = _model(overrides, max_len=64 + new_tokens)
    ours, compile_s = _ours(model, params, rows, new_tokens)
    hf = _hf(model_cfg, params, rows, new_tokens, _TORCH_THREADS.value)
    times = {"ours": [], "hf": []}
    for i in range(rounds):
      for side, fn in (("ours", ours), ("hf", hf)):
        start = time.perf_counter()
        fn(i)
        times[side].append(time.perf_counter() - start)
    tokens = len(rows) * new_tokens
    ours_tps = tokens / statistics.median(times["ours"])
    hf_tps = tokens / statistics.median(times["hf"])
    results.append({"shape": name, "rows": len(rows), "prompts": prompts,
                    "generations": generations, "new_tokens": new_tokens,
                    "ours_tokens_per_sec": ours_tps, "hf_generate_tokens_per_sec": hf_tps,
                    "ratio": ours_tps / hf_tps, "ours_compile_sec": compile_s,
                    "rounds": rounds})
    print(f"{name}: ours {ours_tps:.0f} tok/s, HF generate {hf_tps:.0f} tok/s, "
          f"{ours_tps / hf_tps:.2f}x (compile {compile_s:.1f}s)")
  return results


def write_rollout_results(results: list[dict], out_dir: str) -> dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  base = os.path.join(out_dir, "benchmark_alignment_rollout")
  with open(base + ".json", "w") as f:
    json.dump({"command": "PYTHONPATH=. python experiments/benchmark_alignment.py "
                          "--part=rollout", "results": results}, f, indent=2)
  lines = ["| shape | rows (prompts x G) | new tokens | ours tok/s | HF generate tok/s | ratio |",
           "|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['shape']} | {r['rows']} ({r['prompts']} x {r['generations']}) | "
                 f"{r['new_tokens']} | {r['ours_tokens_per_sec']:.0f} | "
                 f"{r['hf_generate_tokens_per_sec']:.0f} | {r['ratio']:.2f}x |")
  with open(base + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  x = np.arange(len(results))
  ax.bar(x - 0.2, [r["ours_tokens_per_sec"] for r in results], 0.4, label="llm_jax sampler")
  ax.bar(x + 0.2, [r["hf_generate_tokens_per_sec"] for r in results], 0.4,
         label="HF generate (trl)")
  ax.set_xticks(x, [r["shape"] for r in results])
  ax.set_ylabel("rollout tokens / s")
  ax.set_title("GRPO rollout throughput on CPU")
  ax.legend()
  fig.tight_layout()
  fig.savefig(base + ".png", dpi=120)
  plt.close(fig)
  return {"json": base + ".json", "md": base + ".md", "png": base + ".png"}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _PART.value in ("rollout", "all"):
    paths = write_rollout_results(rollout_benchmark(_QUICK.value), _OUT.value)
    print("\n".join(paths.values()))
  if _PART.value in ("dpo", "all"):
    raise app.UsageError("--part=dpo: see experiments/benchmark_dpo.py")


if __name__ == "__main__":
  app.run(main)
