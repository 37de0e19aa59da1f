"""Prefill and decode throughput and peak memory of a model, measured after compilation.

prefill tokens/s: one forward pass over a [batch, prompt_length] batch of random tokens.
decode tokens/s: batch * (n - 1) / (time to generate n tokens - time to generate 1), greedy
through the KV-cache decoder with no early stop. Peak memory: the accelerator's
peak_bytes_in_use where the backend reports it, else the process' peak resident set size.
"""

import resource
import sys
import time

import jax
import numpy as np

from llm_jax import decoding
from llm_jax.evaluation import scoring


def _best_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def peak_memory() -> dict:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]),
            "peak_memory_kind": f"{jax.devices()[0].platform} peak_bytes_in_use"}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  rss *= 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
  return {"peak_memory_bytes": int(rss), "peak_memory_kind": "host peak RSS"}


def measure_efficiency(model, params, model_cfg, *, batch_size: int = 8,
                       prompt_length: int = 32, new_tokens: int = 16, repeats: int = 3) -> dict:
  family = model_cfg.family
  if family not in ("decoder", "encoder_decoder"):
    raise ValueError(f"efficiency is measured for decoder / encoder_decoder models, got {family!r}")
  prompt_length = max(2, min(prompt_length, model_cfg.max_len - new_tokens))
  new_tokens = max(2, min(new_tokens, model_cfg.max_len - prompt_length))
  rng = np.random.default_rng(0)
  vocab = max(2, min(model_cfg.vocab_size, 1000))
  prompts = rng.integers(1, vocab, (batch_size, prompt_length)).astype(np.int32)
  if family == "decoder":
    batch = scoring.decoder_scoring_batch(prompts.tolist(), batch_size, pad_id=0)
  else:
    batch = scoring.seq2seq_scoring_batch(prompts.tolist(), prompts[:, :new_tokens].tolist(),
                                          batch_size, 0, model_cfg.decoder_start_token_id)
  score_fn = scoring.make_score_fn(model, family)
  prefill_seconds = _best_seconds(lambda: score_fn(params, batch), repeats)
  generate = lambda n: decoding.generate(model, params, prompts, max_new_tokens=n,
                                         method="greedy", eos_id=None).tokens
  one = _best_seconds(lambda: generate(1), repeats)
  many = _best_seconds(lambda: generate(new_tokens), repeats)
  prefill_tokens = batch["inputs"].shape[1] * batch_size
  return {"prefill_tokens_per_s": prefill_tokens / prefill_seconds,
          "decode_tokens_per_s": batch_size * (new_tokens - 1) / max(many - one, 1e-9),
          "efficiency_batch_size": batch_size, "efficiency_prompt_length": prompt_length,
          "efficiency_new_tokens": new_tokens, "device": jax.devices()[0].platform,
          **peak_memory()}
