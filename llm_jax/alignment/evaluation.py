"""Held-out evaluation of a policy: the mean reward of its greedy completions (for the
arithmetic task with the exact-match reward: held-out exact match)."""

import numpy as np

from llm_jax.alignment import rollout
from llm_jax.data import arithmetic


def greedy_completions(model, params, tokenizer, prompt_ids: list[list[int]],
                       opts: rollout.SamplerOptions, batch_size: int = 100, mesh=None,
                       rules=None) -> list[str]:
  """Greedy completions (text without the stop token) of every prompt, decoded in chunks of
  `batch_size` rows (the last chunk padded by repeating its first prompt)."""
  texts = []
  for start in range(0, len(prompt_ids), batch_size):
    chunk = prompt_ids[start:start + batch_size]
    padded = chunk + [chunk[0]] * (batch_size - len(chunk))
    completions_BxN = rollout.sample(model, params, padded, None, opts, mesh, rules,
                                     method="greedy")[:len(chunk)]
    lengths_B = rollout.completion_lengths(completions_BxN, opts.stop_ids)
    texts += rollout.completion_texts(tokenizer, completions_BxN, lengths_B, opts.stop_ids)
  return texts


def exact_match_accuracy(model, params, tokenizer, problems: list[dict], max_new_tokens: int,
                         template: str = "{prompt}", batch_size: int = 100, mesh=None,
                         rules=None) -> float:
  """Share of `problems` ({prompt, answer}) whose greedy completion is exactly the answer."""
  specials = tokenizer.specials
  opts = rollout.SamplerOptions(
      max_new_tokens=max_new_tokens, eos_id=specials.eos_id, pad_id=int(specials.pad_id),
      stop_ids=tuple([specials.eos_id] + tokenizer.encode("\n")[-1:]),
      vocab_limit=tokenizer.vocab_size)
  prompt_ids = [tokenizer.encode(template.format(**p)) for p in problems]
  texts = greedy_completions(model, params, tokenizer, prompt_ids, opts, batch_size, mesh, rules)
  return float(np.mean([arithmetic.exact_match(t, p["answer"]) for t, p in zip(texts, problems)]))


def workdir_exact_match(workdir: str, problems: list[dict], max_new_tokens: int,
                        template: str = "{prompt}") -> float:
  """exact_match_accuracy of the latest checkpoint of a training workdir."""
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  model, params, _, tokenizer = load.load_from_workdir(workdir)
  return exact_match_accuracy(model, params, tokenizer, problems, max_new_tokens, template)
