"""Low-rank factorisation: a dense kernel W [C, F] (as a matrix) becomes A [C, r] B [r, F]
from its truncated SVD (A = U_r S_r, B = V_r^T), r per layer by rank or by retained energy.

The factorised model is written as the model's own LoRA factors: the targeted kernels are
zero, lora_a / lora_b hold A and B (zero-padded to one common rank, which changes nothing),
lora_alpha = lora_rank so their product enters at scale 1. Fine-tuning it from
train.init_from with the same model.peft trains the factors only.
"""

import numpy as np
import ml_collections

from llm_jax.compress import ptq
from llm_jax.peft import quantize


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
  """The smallest rank whose squared singular values hold `energy` of the total."""
  cumulative = np.cumsum(np.square(singular_values))
  return int(np.searchsorted(cumulative, energy * cumulative[-1] - 1e-12) + 1)


def factorise(kernel, layer: str, rank: int = 0, energy: float = 0.0):
  """(A [*contracted, r], B [r, *features]) with A B = the rank-r approximation of kernel."""
  contract = ptq.contract_dims_for(layer)
  w_CxF = np.asarray(quantize.as_matrix(kernel, contract)).T.astype(np.float64)
  u, s, vt = np.linalg.svd(w_CxF, full_matrices=False)
  if energy:
    if not 0 < energy <= 1:
      raise ValueError(f"--energy={energy}: expected a fraction in (0, 1]")
    r = rank_for_energy(s, energy)
  elif rank > 0:
    r = min(rank, len(s))
  else:
    raise ValueError("low-rank factorisation needs --rank > 0 or --energy in (0, 1]")
  shape = np.shape(kernel)
  a = (u[:, :r] * s[:r]).reshape(*shape[:contract], r)
  b = vt[:r].reshape(r, *shape[contract:])
  return a.astype(np.float32), b.astype(np.float32)


def factorise_model(cfg, params, *, rank: int = 0, energy: float = 0.0,
                    targets: str = r"mlp/"):
  """(params with zero kernels and LoRA factors, config with model.peft set, factor count)."""
  targets = r"(attention|mlp)/" if targets == "." else targets
  kernels = ptq.dense_kernels(params, targets)
  if not kernels:
    raise ValueError(f"--targets={targets!r} matches no dense layer")
  factors = {layer: factorise(k, layer, rank, energy) for layer, k in kernels.items()}
  common = max(a.shape[-1] for a, _ in factors.values())
  out = ptq.replace_kernels(params, {layer: np.zeros_like(np.asarray(k))
                                     for layer, k in kernels.items()})
  count = 0
  for layer, (a, b) in factors.items():
    count += a.size + b.size
    pad = common - a.shape[-1]
    node = out
    for key in layer.split("/"):
      node = node[key]
    node["lora_a"] = np.concatenate([a, np.zeros((*a.shape[:-1], pad), np.float32)], -1)
    node["lora_b"] = np.concatenate([b, np.zeros((pad, *b.shape[1:]), np.float32)], 0)
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.model.peft.update(lora_rank=common, lora_alpha=float(common), lora_dropout=0.0,
                        lora_targets="^(" + "|".join(sorted(factors)) + ")$")
  return out, cfg, count
