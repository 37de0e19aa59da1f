"""Policy-gradient tasks on rollout batches: GRPO, PPO's clipped policy loss and PPO's critic.

A rollout batch (llm_jax/alignment/rollout.py) holds prompt + completion rows: inputs, targets,
loss_weights (1 on the completion's target tokens), input_segment_ids, input_positions, and per
target token advantages, old_logprobs (the policy that sampled, before this batch's updates)
and ref_logprobs (the frozen reference); PPO's critic also reads returns and old_values.

  policy (grpo, ppo)  -min(rho A, clip(rho, 1 - eps, 1 + eps) A),  rho = pi / pi_old per token
                      (Schulman et al. 2017)
  grpo                + beta * KL_k3(pi || ref),  KL_k3 = ref/pi - log(ref/pi) - 1 per token
                      (Shao et al. 2024, as Hugging Face trl)
  ppo_value           0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)

'token' normalisation divides the sum over every completion token of the GLOBAL batch by their
count (trl's 'dapo'/'bnpo'); 'sequence' averages each row's tokens, then the rows (trl's 'grpo').
Log-probabilities are of the logits divided by the sampling temperature, as the rollout drew.
"""

import dataclasses

import jax
import jax.numpy as jnp

from llm_jax.tasks import base

POLICY_NAMES = ("grpo", "ppo")
NAMES = POLICY_NAMES + ("ppo_value",)
NORMALIZATIONS = ("token", "sequence")


def token_logprobs(logits_BxLxV, targets_BxL, temperature: float = 1.0):
  """log pi(target) per position, in float32."""
  logps_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(logps_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def token_entropy(logits_BxLxV, temperature: float = 1.0):
  """Entropy of pi(. | prefix) per position, in float32."""
  logps_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32) / temperature, axis=-1)
  return -jnp.sum(jnp.exp(logps_BxLxV) * logps_BxLxV, axis=-1)


def clipped_surrogate(logratio_BxL, advantages_BxL, clip_eps: float):
  """(PPO's per-token policy loss, 1 where the clipped term is the one taken)."""
  ratio_BxL = jnp.exp(logratio_BxL)
  unclipped_BxL = ratio_BxL * advantages_BxL
  clipped_BxL = jnp.clip(ratio_BxL, 1.0 - clip_eps, 1.0 + clip_eps) * advantages_BxL
  return -jnp.minimum(unclipped_BxL, clipped_BxL), (clipped_BxL < unclipped_BxL)


def k3_kl(logps_BxL, ref_logps_BxL):
  """Schulman's unbiased, non-negative estimator of KL(pi || ref) per sampled token."""
  log_ref_over_pi_BxL = ref_logps_BxL - logps_BxL
  return jnp.exp(log_ref_over_pi_BxL) - log_ref_over_pi_BxL - 1.0


def clipped_value_loss(values_BxL, old_values_BxL, returns_BxL, value_clip: float):
  """PPO's per-token value loss, the new value clipped to old +- value_clip."""
  clipped_BxL = old_values_BxL + jnp.clip(values_BxL - old_values_BxL, -value_clip, value_clip)
  return 0.5 * jnp.maximum(jnp.square(values_BxL - returns_BxL),
                           jnp.square(clipped_BxL - returns_BxL))


def _token_scale(batch, totals, normalization):
  """Per-token weight of the loss: loss_weights over the tokens of the batch or of each row."""
  weights_BxL = batch["loss_weights"].astype(jnp.float32)
  if normalization == "token":
    return weights_BxL / totals["tokens"]
  row_tokens_Bx1 = jnp.maximum(jnp.sum(weights_BxL, -1, keepdims=True), 1.0)
  return weights_BxL / row_tokens_Bx1 / totals["sequences"]


def _totals(batch):
  weights_BxL = batch["loss_weights"].astype(jnp.float32)
  rows = jnp.sum((jnp.sum(weights_BxL, -1) > 0).astype(jnp.float32))
  return {"tokens": base.weight_total(batch), "sequences": jnp.maximum(rows, 1.0)}


def _sums(loss_BxL, weights_BxL, **metrics_BxL):
  sums = dict(loss_sum=jnp.sum(loss_BxL * weights_BxL), weight_sum=jnp.sum(weights_BxL),
              correct_sum=jnp.zeros((), jnp.float32), z_loss_sum=jnp.zeros((), jnp.float32))
  for name, value_BxL in metrics_BxL.items():
    sums[f"{name}_sum"] = jnp.sum(value_BxL.astype(jnp.float32) * weights_BxL)
  return sums


def _per_token_means(sums, names):
  tokens = jnp.maximum(sums["weight_sum"], 1e-9)
  return {name: sums[f"{name}_sum"] / tokens for name in names}


@dataclasses.dataclass(frozen=True)
class PolicyGradient:
  """GRPO (with the KL-to-reference term when kl_coef > 0) or PPO's clipped policy loss (its
  KL penalty is in the rewards). The frozen reference runs in the step (outputs['reference'])."""
  name: str = "grpo"
  clip_eps: float = 0.2
  kl_coef: float = 0.0
  temperature: float = 1.0
  normalization: str = "token"

  def __post_init__(self):
    if self.name not in POLICY_NAMES:
      raise ValueError(f"policy-gradient task {self.name!r}: expected one of {POLICY_NAMES}")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"alignment.loss_normalization={self.normalization!r}: expected one of "
                       f"{NORMALIZATIONS}")

  @property
  def uses_reference(self) -> bool:
    return True  # PPO's rewards and GRPO's loss both compare with the frozen initial policy

  def totals(self, batch):
    return _totals(batch)

  def loss(self, outputs, batch, totals):
    logits_BxLxV = base.require_output(outputs, "logits", self.name, "a decoder's LM head")
    logps_BxL = token_logprobs(logits_BxLxV, batch["targets"], self.temperature)
    loss_BxL, clipped_BxL = clipped_surrogate(logps_BxL - batch["old_logprobs"],
                                              batch["advantages"], self.clip_eps)
    ref_logps_BxL = batch["ref_logprobs"]
    if "reference" in outputs:
      ref_logps_BxL = token_logprobs(outputs["reference"]["logits"], batch["targets"],
                                     self.temperature)
    kl_BxL = k3_kl(logps_BxL, ref_logps_BxL)
    if self.name == "grpo" and self.kl_coef:
      loss_BxL = loss_BxL + self.kl_coef * kl_BxL
    weights_BxL = batch["loss_weights"].astype(jnp.float32)
    loss = jnp.sum(loss_BxL * _token_scale(batch, totals, self.normalization))
    entropy_BxL = jax.lax.stop_gradient(token_entropy(logits_BxLxV, self.temperature))
    return loss, _sums(loss_BxL, weights_BxL, kl=jax.lax.stop_gradient(kl_BxL),
                       clip_fraction=clipped_BxL, entropy=entropy_BxL,
                       ratio=jax.lax.stop_gradient(jnp.exp(logps_BxL - batch["old_logprobs"])))

  def step_metrics(self, sums):
    return _per_token_means(sums, ("kl", "clip_fraction", "entropy", "ratio"))

  def eval_sums(self, outputs, batch):
    logps_BxL = token_logprobs(outputs["logits"], batch["targets"], self.temperature)
    weights_BxL = batch["loss_weights"].astype(jnp.float32)
    return {"loss_sum": -jnp.sum(logps_BxL * weights_BxL), "weight_sum": jnp.sum(weights_BxL),
            "correct_sum": jnp.zeros((), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class ValueRegression:
  """PPO's critic: a per-token value (outputs['values'], llm_jax/models/value_head.py) fit to
  the GAE returns with the clipped value loss."""
  name: str = "ppo_value"
  value_clip: float = 0.2
  normalization: str = "token"

  def totals(self, batch):
    return _totals(batch)

  def loss(self, outputs, batch, totals):
    values_BxL = base.require_output(outputs, "values", self.name,
                                     "a critic built with models/value_head.py")
    loss_BxL = clipped_value_loss(values_BxL, batch["old_values"], batch["returns"],
                                  self.value_clip)
    weights_BxL = batch["loss_weights"].astype(jnp.float32)
    loss = jnp.sum(loss_BxL * _token_scale(batch, totals, self.normalization))
    explained_BxL = jnp.square(jax.lax.stop_gradient(values_BxL) - batch["returns"])
    return loss, _sums(loss_BxL, weights_BxL, value_error=explained_BxL)

  def step_metrics(self, sums):
    return _per_token_means(sums, ("value_error",))

  def eval_sums(self, outputs, batch):
    loss_BxL = jnp.square(outputs["values"] - batch["returns"])
    weights_BxL = batch["loss_weights"].astype(jnp.float32)
    return {"loss_sum": jnp.sum(loss_BxL * weights_BxL), "weight_sum": jnp.sum(weights_BxL),
            "correct_sum": jnp.zeros((), jnp.float32)}


def make(cfg):
  """The task of cfg.task.name ('grpo', 'ppo', 'ppo_value') with cfg.alignment's settings."""
  from llm_jax.alignment import config as alignment_config  # pylint: disable=g-import-not-at-top
  align = cfg.get("alignment") or alignment_config.default_alignment_config()
  name = cfg.task.name
  if name == "ppo_value":
    return ValueRegression(value_clip=float(align.value_clip),
                           normalization=align.loss_normalization)
  return PolicyGradient(name=name, clip_eps=float(align.clip_eps),
                        kl_coef=float(align.kl_coef) if name == "grpo" else 0.0,
                        temperature=float(align.temperature),
                        normalization=align.loss_normalization)
