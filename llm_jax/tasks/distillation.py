"""Knowledge distillation (Hinton et al. 2015): the student's token loss mixed with the
temperature-scaled KL divergence from a frozen teacher's next-token distribution.

  loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE

both summed over the weighted tokens of the GLOBAL batch and divided by their weight. The
teacher (config.distill.teacher) runs inside the train step on frozen parameters; its outputs
arrive as outputs['teacher']. Reported: loss = the hard-label CE (comparable to a run without
KD), kd_loss = T^2 KL per token.
"""

import dataclasses

import jax
import jax.numpy as jnp

from llm_jax.tasks import base
from llm_jax.tasks import losses


def kd_sum(student_BxLxV, teacher_BxLxV, weights_BxL, temperature: float) -> jax.Array:
  """Sum over weighted tokens of T^2 KL(softmax(teacher/T) || softmax(student/T))."""
  if student_BxLxV.shape != teacher_BxLxV.shape:
    raise ValueError(f"distillation: student logits {student_BxLxV.shape} and teacher logits "
                     f"{teacher_BxLxV.shape} differ: the teacher (config.distill.teacher) must "
                     "share the student's vocabulary (model.vocab_size) and tokenizer")
  t = jnp.float32(temperature)
  log_p_teacher = jax.nn.log_softmax(teacher_BxLxV.astype(jnp.float32) / t, axis=-1)
  log_p_student = jax.nn.log_softmax(student_BxLxV.astype(jnp.float32) / t, axis=-1)
  kl_BxL = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return t * t * jnp.sum(kl_BxL * weights_BxL.astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class Distillation:
  name: str = "pretrain"  # the token-level task whose data and hard labels are used
  temperature: float = 2.0
  alpha: float = 0.5
  z_loss: float = 0.0

  def totals(self, batch):
    return {"weight": base.weight_total(batch)}

  def loss(self, outputs, batch, totals):
    teacher = base.require_output(outputs, "teacher", "distillation", "config.distill.teacher")
    sums = losses.cross_entropy(outputs["logits"], batch["targets"], batch["loss_weights"],
                                self.z_loss)
    sums["kd_loss_sum"] = kd_sum(outputs["logits"], jax.lax.stop_gradient(teacher["logits"]),
                                 batch["loss_weights"], self.temperature)
    hard = (sums["loss_sum"] + sums["z_loss_sum"]) / totals["weight"]
    loss = self.alpha * sums["kd_loss_sum"] / totals["weight"] + (1.0 - self.alpha) * hard
    return loss, sums

  def step_metrics(self, sums):
    return {"kd_loss": sums["kd_loss_sum"] / jnp.maximum(sums["weight_sum"], 1e-9)}

  def eval_sums(self, outputs, batch):
    sums = losses.cross_entropy(outputs["logits"], batch["targets"], batch["loss_weights"])
    return {k: sums[k] for k in ("loss_sum", "weight_sum", "correct_sum")}


TOKEN_TASKS = ("pretrain", "sft", "seq2seq")


def make(cfg) -> Distillation:
  """The distillation task of `cfg` (config.distill, over config.task.name's token loss)."""
  name = cfg.task.name if cfg.get("task") is not None else "pretrain"
  if name not in TOKEN_TASKS:
    raise ValueError(f"config.distill.teacher is set but task.name={name!r}: distillation "
                     f"trains token-level tasks {TOKEN_TASKS}")
  d = cfg.distill
  if float(d.temperature) <= 0:
    raise ValueError(f"config.distill.temperature={d.temperature}: must be > 0")
  if not 0.0 <= float(d.alpha) <= 1.0:
    raise ValueError(f"config.distill.alpha={d.alpha}: expected a value in [0, 1]")
  return Distillation(name=name, temperature=float(d.temperature), alpha=float(d.alpha),
                      z_loss=float(cfg.optimizer.get("z_loss", 0.0)))
