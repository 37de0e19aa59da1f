"""Token-level cross-entropy tasks: pretraining objectives, seq2seq, SFT and cloze training.

They differ only in their data (which tokens carry loss weight); the loss is the weighted
next-token cross-entropy over the GLOBAL batch, plus PaLM's z-loss and, for BERT pretraining
with `objective.nsp`, the next-sentence loss averaged over the rows.
"""

import dataclasses

import jax
import jax.numpy as jnp

from llm_jax.tasks import base
from llm_jax.tasks import losses


@dataclasses.dataclass(frozen=True)
class LanguageModeling:
  name: str = "pretrain"
  z_loss: float = 0.0
  nsp: bool = False

  def totals(self, batch):
    totals = {"weight": base.weight_total(batch)}
    if self.nsp:
      totals["rows"] = jnp.maximum(jnp.sum(_nsp_rows(batch)), 1.0)
    return totals

  def loss(self, outputs, batch, totals):
    sums = losses.cross_entropy(outputs["logits"], batch["targets"], batch["loss_weights"],
                                self.z_loss)
    loss = (sums["loss_sum"] + sums["z_loss_sum"]) / totals["weight"]
    if self.nsp:
      nsp = _nsp_sums(outputs, batch)
      sums.update(nsp_loss_sum=nsp["loss_sum"], nsp_correct_sum=nsp["correct_sum"],
                  nsp_weight_sum=nsp["weight_sum"])
      loss = loss + nsp["loss_sum"] / totals["rows"]
    return loss, sums

  def eval_sums(self, outputs, batch):
    sums = losses.cross_entropy(outputs["logits"], batch["targets"], batch["loss_weights"])
    return {k: sums[k] for k in ("loss_sum", "weight_sum", "correct_sum")}


def _nsp_rows(batch) -> jax.Array:
  """1 for rows whose first token is real: the [CLS] the NSP head reads."""
  if "nsp_labels" not in batch:
    raise ValueError("objective.nsp is on but the batch has no 'nsp_labels' field")
  return (batch["input_segment_ids"][:, 0] != 0).astype(jnp.float32)


def _nsp_sums(outputs, batch):
  logits_Bx2 = base.require_output(outputs, "nsp_logits", "pretrain with objective.nsp",
                                   "model.nsp_head=True and model.pooler=True")
  return losses.cross_entropy(logits_Bx2, batch["nsp_labels"][:, 0], _nsp_rows(batch))
