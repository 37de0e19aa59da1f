"""Learning-rate schedules and the optax optimizer (AdamW or Adafactor) with its decay mask."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")
OPTIMIZERS = ("adamw", "adafactor")
NO_DECAY = ("norms_biases", "norms_biases_embeddings", "none")


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="adamw",               # 'adamw' | 'adafactor'
      learning_rate=3e-4,         # peak, reached at the end of warmup
      schedule="cosine",          # 'cosine' | 'linear' | 'inverse_sqrt' | 'constant'
      warmup_steps=100,           # linear from 0
      end_lr_fraction=0.1,        # cosine / linear end at learning_rate * end_lr_fraction
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,           # decoupled: params shrink by learning_rate * weight_decay
      no_decay="norms_biases",    # 'norms_biases' | 'norms_biases_embeddings' | 'none'
      grad_clip_norm=1.0,         # global-norm clipping; 0 = off
      microbatches=1,             # gradient accumulation over slices of the batch; 1 = off
      z_loss=0.0,                 # coefficient of log(Z)^2 in the loss; 0 = off
      # Which parameters train, by regexes searched in their paths ('decoder/layers_0/mlp/wi/kernel').
      # trainable '' = all (with peft: only the peft parameters and task heads); frozen wins.
      trainable="",
      frozen="",
      # Per-group learning rates: ((regex, multiplier), ...), the first match applies.
      lr_multipliers=(),
      layer_lr_decay=1.0,         # layer-wise LR decay: layer i of n gets decay**(n - i); 1 = off
  ))


def make_schedule(opt_cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then the named decay.

  cosine / linear go to `learning_rate * end_lr_fraction` at `total_steps`;
  inverse_sqrt is `learning_rate * sqrt(warmup_steps / step)` after warmup.
  """
  if opt_cfg.schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule={opt_cfg.schedule!r}: expected one of {SCHEDULES}")
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps}: must be at least 1")
  if opt_cfg.warmup_steps < 0:
    raise ValueError(f"optimizer.warmup_steps={opt_cfg.warmup_steps}: must be >= 0")
  peak = float(opt_cfg.learning_rate)
  end = peak * float(opt_cfg.end_lr_fraction)
  warmup = int(opt_cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  kind = opt_cfg.schedule

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    if kind == "cosine":
      decayed = end + (peak - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    elif kind == "linear":
      decayed = peak + (end - peak) * progress
    elif kind == "inverse_sqrt":
      decayed = peak * jnp.sqrt(max(warmup, 1) / jnp.maximum(step, max(warmup, 1)))
    else:
      decayed = jnp.full_like(step, peak)
    if warmup == 0:
      return decayed
    return jnp.where(step < warmup, peak * step / warmup, decayed)

  return schedule


def decay_mask(params: Any, no_decay: str = "norms_biases") -> Any:
  """True where weight decay applies, from each parameter's path.

  Norm scales and biases are the leaves whose name ends in 'scale' or 'bias' (so also
  'final_logits_bias' and T5's 'relpos_bias') or under a module whose name contains 'norm';
  embeddings are leaves or modules whose name contains 'embedding'.
  """
  if no_decay not in NO_DECAY:
    raise ValueError(f"optimizer.no_decay={no_decay!r}: expected one of {NO_DECAY}")

  def decays(path, _):
    names = [_key_name(key).lower() for key in path]
    if no_decay == "none":
      return True
    is_norm_or_bias = names[-1].endswith(("scale", "bias")) or any("norm" in n for n in names)
    if is_norm_or_bias:
      return False
    if no_decay == "norms_biases_embeddings" and any("embedding" in n for n in names):
      return False
    return True

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    opt_cfg: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or Adafactor on the schedule, decay masked by path."""
  if opt_cfg.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={opt_cfg.name!r}: expected one of {OPTIMIZERS}")
  if opt_cfg.no_decay not in NO_DECAY:
    raise ValueError(f"optimizer.no_decay={opt_cfg.no_decay!r}: expected one of {NO_DECAY}")
  schedule = make_schedule(opt_cfg, total_steps)
  mask = lambda params: decay_mask(params, opt_cfg.no_decay)
  if opt_cfg.name == "adamw":
    base = optax.adamw(
        schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
        weight_decay=opt_cfg.weight_decay, mask=mask)
  else:
    # Adafactor adds its decay after the learning rate: scale it by the schedule as AdamW does.
    decay = None
    if opt_cfg.weight_decay:
      decay = lambda count: opt_cfg.weight_decay * schedule(count)
    base = optax.adafactor(schedule, weight_decay_rate=decay, weight_decay_mask=mask)
  if opt_cfg.grad_clip_norm and opt_cfg.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip_norm), base)
  return base


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)
