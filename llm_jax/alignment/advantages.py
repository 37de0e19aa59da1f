"""Advantages: group-relative (GRPO) and generalised advantage estimation (PPO); NumPy, on the
host, between the rollout and the updates.

Per-token arrays are [B, L], aligned with the batch's targets: position t is the action
"emit targets[t]", taken in the state whose value the critic reads at input position t;
`mask_BxL` (the loss weights) marks the completion's tokens, one contiguous run per row.
"""

import numpy as np

SCALES = ("group", "batch", "none")
STD_EPS = 1e-4  # as Hugging Face trl's GRPOTrainer


def group_relative(rewards_B: np.ndarray, group_size: int, scale: str = "group") -> np.ndarray:
  """(r - mean of its group) / (std + 1e-4), groups of `group_size` consecutive rows; std is
  the group's ('group'), the batch's ('batch') or none ('none'), Bessel-corrected as trl."""
  if scale not in SCALES:
    raise ValueError(f"alignment.scale_rewards={scale!r}: expected one of {SCALES}")
  rewards_B = np.asarray(rewards_B, np.float64)
  if group_size < 1 or rewards_B.shape[0] % group_size:
    raise ValueError(f"{rewards_B.shape[0]} rewards do not split into groups of {group_size}")
  rewards_NxG = rewards_B.reshape(-1, group_size)
  advantages_NxG = rewards_NxG - rewards_NxG.mean(axis=1, keepdims=True)
  if scale == "group":
    std_NxG = _std(rewards_NxG, axis=1)
    advantages_NxG = advantages_NxG / (std_NxG + STD_EPS)
  elif scale == "batch":
    advantages_NxG = advantages_NxG / (_std(rewards_B, axis=None) + STD_EPS)
  return advantages_NxG.reshape(-1).astype(np.float32)


def _std(x, axis):
  n = x.size if axis is None else x.shape[axis]
  if n < 2:
    return np.zeros(() if axis is None else x.shape[:axis] + (1,), np.float64)
  return np.std(x, axis=axis, ddof=1, keepdims=axis is not None)


def gae(rewards_BxL: np.ndarray, values_BxL: np.ndarray, mask_BxL: np.ndarray,
        gamma: float = 1.0, lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """(advantages, returns) of generalised advantage estimation (Schulman et al. 2016):

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1},   R_t = A_t + V_t

  over each row's completion tokens; the state after the last one is terminal (V = 0). Both are
  0 outside the mask."""
  rewards_BxL = np.asarray(rewards_BxL, np.float64)
  values_BxL = np.asarray(values_BxL, np.float64)
  mask_BxL = np.asarray(mask_BxL, np.float64)
  batch, length = rewards_BxL.shape
  advantages_BxL = np.zeros((batch, length), np.float64)
  next_value_B = np.zeros(batch)
  next_advantage_B = np.zeros(batch)
  for t in reversed(range(length)):
    m_B = mask_BxL[:, t]
    delta_B = rewards_BxL[:, t] + gamma * next_value_B - values_BxL[:, t]
    advantage_B = delta_B + gamma * lam * next_advantage_B
    advantages_BxL[:, t] = advantage_B * m_B
    # Outside the completion nothing carries over: a row's completion is its last actions.
    next_value_B = values_BxL[:, t] * m_B
    next_advantage_B = advantage_B * m_B
  returns_BxL = (advantages_BxL + values_BxL) * mask_BxL
  return advantages_BxL.astype(np.float32), returns_BxL.astype(np.float32)


def whiten(x_BxL: np.ndarray, mask_BxL: np.ndarray, eps: float = 1e-8) -> np.ndarray:
  """(x - mean) / std over the masked entries; 0 outside the mask."""
  mask_BxL = np.asarray(mask_BxL, bool)
  values = np.asarray(x_BxL, np.float64)[mask_BxL]
  if values.size == 0:
    return np.zeros_like(x_BxL, np.float32)
  out_BxL = (np.asarray(x_BxL, np.float64) - values.mean()) / (values.std() + eps)
  return np.where(mask_BxL, out_BxL, 0.0).astype(np.float32)


def kl_shaped_rewards(scores_B: np.ndarray, logprobs_BxL: np.ndarray, ref_logprobs_BxL: np.ndarray,
                      mask_BxL: np.ndarray, kl_coef: float) -> np.ndarray:
  """InstructGPT's per-token reward: -kl_coef (log pi - log ref) on every completion token plus
  the sequence's score on its last token."""
  mask_BxL = np.asarray(mask_BxL, np.float64)
  rewards_BxL = -kl_coef * (np.asarray(logprobs_BxL, np.float64)
                            - np.asarray(ref_logprobs_BxL, np.float64)) * mask_BxL
  lengths_B = mask_BxL.sum(axis=1).astype(int)
  last_B = np.where(lengths_B > 0, mask_BxL.shape[1] - 1 - np.argmax(mask_BxL[:, ::-1], axis=1), -1)
  for b, t in enumerate(last_B):
    if t >= 0:
      rewards_BxL[b, t] += float(scores_B[b])
  return rewards_BxL
