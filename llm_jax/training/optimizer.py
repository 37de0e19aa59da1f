"""Learning-rate schedules and the optax optimizer (AdamW or Adafactor) with its decay mask."""

import math
import re
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


def lr_multiplier(path: str, shape, opt_cfg, num_layers: int):
  """The learning-rate multiplier of the parameter at `path` (a float, or for a parameter
  stacked by nn.scan an array [num_layers, 1, ...] with one multiplier per layer).

  The first regex of optimizer.lr_multipliers that matches applies, times the layer-wise
  decay (ELECTRA / BEiT): layer i (0-based) of a stack gets decay**(num_layers - i), the
  embeddings decay**(num_layers + 1), everything above the layers (heads, final norms) 1.
  """
  multiplier = 1.0
  for regex, value in opt_cfg.get("lr_multipliers", ()):
    if re.search(regex, path):
      multiplier = float(value)
      break
  decay = float(opt_cfg.get("layer_lr_decay", 1.0))
  if decay == 1.0:
    return multiplier
  names = path.split("/")
  layer = next((int(n[len("layers_"):]) for n in names if re.fullmatch(r"layers_\d+", n)), None)
  if layer is not None:
    return multiplier * decay ** (num_layers - layer)
  if "layers" in names:  # stacked by nn.scan on the leading axis
    per_layer = decay ** (num_layers - jnp.arange(shape[0], dtype=jnp.float32))
    return multiplier * per_layer.reshape((shape[0],) + (1,) * (len(shape) - 1))
  if any("embed" in n for n in names):
    return multiplier * decay ** (num_layers + 1)
  return multiplier


def scale_by_lr_multipliers(opt_cfg, num_layers: int) -> optax.GradientTransformation:
  """Multiplies each update by `lr_multiplier` of its parameter (paths are read at trace time)."""

  def update(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: u * lr_multiplier("/".join(_key_name(k) for k in path), u.shape,
                                          opt_cfg, num_layers), updates)
    return scaled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    opt_cfg: ml_collections.ConfigDict, total_steps: int, num_layers: int = 0
) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or Adafactor on the schedule, decay masked by path, then
  the per-group learning-rate multipliers (lr_multipliers, layer_lr_decay) if any."""
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
  for regex, value in opt_cfg.get("lr_multipliers", ()):
    try:
      re.compile(regex)
    except re.error as e:
      raise ValueError(f"optimizer.lr_multipliers: {regex!r} is not a valid regex: {e}") from e
    if float(value) < 0:
      raise ValueError(f"optimizer.lr_multipliers: multiplier {value} of {regex!r} is negative")
  if not 0 < float(opt_cfg.get("layer_lr_decay", 1.0)) <= 1:
    raise ValueError(f"optimizer.layer_lr_decay={opt_cfg.layer_lr_decay}: expected (0, 1]")
  parts = []
  if opt_cfg.grad_clip_norm and opt_cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  parts.append(base)
  if opt_cfg.get("lr_multipliers") or float(opt_cfg.get("layer_lr_decay", 1.0)) != 1.0:
    parts.append(scale_by_lr_multipliers(opt_cfg, num_layers))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)
