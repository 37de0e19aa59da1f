"""Sequence classification and regression from the model's 'class_logits' [B, num_labels].

Encoders read [CLS] (or the pooler), decoders their last real token. Batches hold one example
per row: targets [B] (a class id, or a float for regression) and loss_weights [B] (0 on padding
rows). Regression is num_labels = 1 with a squared-error loss, as in Hugging Face.
"""

import dataclasses

import jax.numpy as jnp

from llm_jax.tasks import base
from llm_jax.tasks import losses

_HINT = "set model.num_labels"


@dataclasses.dataclass(frozen=True)
class Classification:
  name: str = "classification"

  def totals(self, batch):
    return {"weight": base.weight_total(batch)}

  def loss(self, outputs, batch, totals):
    sums = self._sums(outputs, batch)
    return sums["loss_sum"] / totals["weight"], sums

  def eval_sums(self, outputs, batch):
    sums = self._sums(outputs, batch)
    logits_BxC = outputs["class_logits"]
    return {**{k: sums[k] for k in ("loss_sum", "weight_sum", "correct_sum")},
            "predictions": jnp.argmax(logits_BxC, -1), "targets": batch["targets"],
            "weights": batch["loss_weights"]}

  def _sums(self, outputs, batch):
    logits_BxC = base.require_output(outputs, "class_logits", self.name, _HINT)
    return losses.cross_entropy(logits_BxC, batch["targets"].astype(jnp.int32),
                                batch["loss_weights"])


@dataclasses.dataclass(frozen=True)
class Regression:
  name: str = "regression"

  def totals(self, batch):
    return {"weight": base.weight_total(batch)}

  def loss(self, outputs, batch, totals):
    sums = losses.squared_error(self._predictions(outputs), batch["targets"],
                                batch["loss_weights"])
    return sums["loss_sum"] / totals["weight"], sums

  def eval_sums(self, outputs, batch):
    predictions_B = self._predictions(outputs)
    sums = losses.squared_error(predictions_B, batch["targets"], batch["loss_weights"])
    return {**{k: sums[k] for k in ("loss_sum", "weight_sum", "correct_sum")},
            "predictions": predictions_B, "targets": batch["targets"],
            "weights": batch["loss_weights"]}

  def _predictions(self, outputs):
    logits_BxC = base.require_output(outputs, "class_logits", self.name, "set model.num_labels=1")
    if logits_BxC.shape[-1] != 1:
      raise ValueError(f"task 'regression' needs model.num_labels=1; class_logits has "
                       f"{logits_BxC.shape[-1]} columns")
    return logits_BxC[:, 0]
