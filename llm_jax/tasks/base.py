"""The Task protocol: the loss one train step minimises and the sums its eval step reports.

`loss(outputs, batch, totals)` returns (scalar loss, metric sums). `totals` are computed once on
the whole GLOBAL batch (`totals(batch)`) before any microbatch slicing, so the gradient of a
sliced step equals the gradient of the whole batch. Metric sums always hold loss_sum,
weight_sum and correct_sum (and z_loss_sum), which the loop turns into means.
"""

from typing import Protocol

import jax
import jax.numpy as jnp

Array = jax.Array


class Task(Protocol):
  name: str

  def totals(self, batch: dict[str, Array]) -> dict[str, Array]:
    ...

  def loss(self, outputs: dict[str, Array], batch: dict[str, Array],
           totals: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    ...

  def eval_sums(self, outputs: dict[str, Array], batch: dict[str, Array]) -> dict[str, Array]:
    ...


def weight_total(batch: dict[str, Array]) -> Array:
  """Sum of loss_weights, or 1 when it is 0 (a batch with nothing to learn has loss 0)."""
  weight_sum = jnp.sum(batch["loss_weights"].astype(jnp.float32))
  return jnp.where(weight_sum > 0, weight_sum, 1.0)


def require_output(outputs: dict[str, Array], key: str, task: str, hint: str) -> Array:
  if key not in outputs:
    raise ValueError(f"task {task!r} needs the model output {key!r} ({hint}); the model "
                     f"returns {sorted(outputs)}")
  return outputs[key]
