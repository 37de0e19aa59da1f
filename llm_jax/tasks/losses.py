"""Loss sums shared by the tasks: weighted token cross-entropy (+ z-loss) and example-level
cross-entropy and squared error. Sums, not means, so that shards and microbatches add up."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits_BxLxV: jax.Array,
    targets_BxL: jax.Array,
    weights_BxL: jax.Array,
    z_loss: float = 0.0,
) -> dict[str, jax.Array]:
  """Sums over all weighted tokens, in float32 whatever the logits' dtype.

  Returns loss_sum (cross-entropy), z_loss_sum (z_loss * log(Z)^2, PaLM's auxiliary loss),
  weight_sum and correct_sum (weighted count of argmax == target). Works for [B, V] logits
  with [B] targets too (one prediction per example).
  """
  if logits_BxLxV.shape[:-1] != targets_BxL.shape or targets_BxL.shape != weights_BxL.shape:
    raise ValueError(
        f"cross_entropy: logits {logits_BxLxV.shape}, targets {targets_BxL.shape} and "
        f"loss_weights {weights_BxL.shape} disagree (expected [B,L,V], [B,L], [B,L])")
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  weights_BxL = weights_BxL.astype(jnp.float32)
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)
  sums = dict(
      loss_sum=jnp.sum(ce_BxL * weights_BxL),
      weight_sum=jnp.sum(weights_BxL),
      correct_sum=jnp.sum((jnp.argmax(logits_BxLxV, -1) == targets_BxL) * weights_BxL),
  )
  if z_loss:
    log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
    sums["z_loss_sum"] = z_loss * jnp.sum(jnp.square(log_z_BxL) * weights_BxL)
  else:
    sums["z_loss_sum"] = jnp.zeros((), jnp.float32)
  return sums


def squared_error(predictions_B: jax.Array, targets_B: jax.Array,
                  weights_B: jax.Array) -> dict[str, jax.Array]:
  """loss_sum = sum of weighted squared errors; weight_sum; correct_sum is 0 (no classes)."""
  if predictions_B.shape != targets_B.shape or targets_B.shape != weights_B.shape:
    raise ValueError(f"squared_error: predictions {predictions_B.shape}, targets "
                     f"{targets_B.shape} and loss_weights {weights_B.shape} disagree")
  weights_B = weights_B.astype(jnp.float32)
  error_B = predictions_B.astype(jnp.float32) - targets_B.astype(jnp.float32)
  return dict(loss_sum=jnp.sum(jnp.square(error_B) * weights_B), weight_sum=jnp.sum(weights_B),
              correct_sum=jnp.zeros((), jnp.float32), z_loss_sum=jnp.zeros((), jnp.float32))
