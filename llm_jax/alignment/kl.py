"""KL control for PPO: the coefficient of the per-token KL penalty against the reference.

Adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"):
    error = clip(KL / target - 1, -0.2, 0.2);   coef <- coef * (1 + error * n / horizon)
after each rollout batch of n sequences whose mean sequence KL is KL. target 0: fixed coef.
"""

import numpy as np


def update_kl_coef(coef: float, observed_kl: float, num_sequences: int, target: float,
                   horizon: int) -> float:
  """The coefficient after one rollout batch."""
  if target <= 0:
    return coef
  if horizon <= 0:
    raise ValueError(f"alignment.kl_horizon must be > 0, got {horizon}")
  error = float(np.clip(observed_kl / target - 1.0, -0.2, 0.2))
  return float(coef * (1.0 + error * num_sequences / horizon))


def sequence_kl(logprobs_BxL, ref_logprobs_BxL, mask_BxL) -> float:
  """Mean over the rows of sum_t (log pi - log ref) over each completion (the k1 estimate)."""
  per_row_B = np.sum((np.asarray(logprobs_BxL, np.float64) - np.asarray(ref_logprobs_BxL))
                     * np.asarray(mask_BxL), axis=1)
  return float(per_row_B.mean())
