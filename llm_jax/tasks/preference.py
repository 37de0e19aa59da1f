"""Preference tasks: a reward model (Bradley-Terry) and direct preference optimisation.

Batches hold pairs as consecutive rows: row 2i = prompt + chosen, row 2i+1 = prompt + rejected,
with loss_weights 1 on the completion's target tokens only (data/preference_examples.py). A pair
counts in the sums with weight pair_weights (1, 0 on padding pairs).

Sequence log-probabilities are sums over the completion tokens (`*_logps`) or their means
(`*_mean_logps`, for IPO, SimPO and ORPO, as in their papers and trl). The DPO family compares
the policy with a frozen reference (`outputs['reference']`, computed in the step from the
frozen reference parameters, or `batch['reference_logps']` precomputed in a first pass).

  dpo    -(1-eps) log s(b d) - eps log s(-b d),  d = (pi_c - ref_c) - (pi_r - ref_r)
         (Rafailov et al. 2023; eps = label_smoothing: conservative DPO)
  ipo    (d' - 1/(2 b))^2 with d' on mean log-probs (Azar et al. 2023)
  simpo  -log s(b (mean_c - mean_r) - gamma), no reference (Meng et al. 2024)
  orpo   NLL(chosen, per token) - b log s(log odds_c - log odds_r), odds = p / (1 - p) of the
         mean log-prob, no reference (Hong et al. 2024; b is ORPO's lambda)
  reward_model  -log s(r_c - r_r - margin) on the last-token scalar head (Ouyang et al. 2022)
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from llm_jax.tasks import base

DPO_LOSSES = ("dpo", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
NAMES = ("reward_model",) + DPO_LOSSES


# ---------------------------------------------------------------------------- formulas


def dpo_loss(chosen_logratio, rejected_logratio, beta: float, label_smoothing: float = 0.0):
  """Per-pair DPO loss from log pi/ref of each completion (conservative with label smoothing)."""
  logits = beta * (chosen_logratio - rejected_logratio)
  return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
          - label_smoothing * jax.nn.log_sigmoid(-logits))


def ipo_loss(chosen_logratio, rejected_logratio, beta: float):
  """Per-pair IPO loss from mean-per-token log pi/ref of each completion."""
  return jnp.square(chosen_logratio - rejected_logratio - 1.0 / (2.0 * beta))


def simpo_loss(chosen_mean_logps, rejected_mean_logps, beta: float, gamma: float,
               label_smoothing: float = 0.0):
  """Per-pair SimPO loss: the length-normalised margin against the target margin gamma."""
  logits = beta * (chosen_mean_logps - rejected_mean_logps) - gamma
  return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)
          - label_smoothing * jax.nn.log_sigmoid(-logits))


def log_odds(mean_logps):
  """log(p / (1 - p)) of p = exp(mean log-prob) < 1."""
  return mean_logps - jnp.log(-jnp.expm1(jnp.minimum(mean_logps, -1e-6)))


def orpo_odds_loss(chosen_mean_logps, rejected_mean_logps):
  """ORPO's odds-ratio term -log s(log odds_c - log odds_r), per pair."""
  return -jax.nn.log_sigmoid(log_odds(chosen_mean_logps) - log_odds(rejected_mean_logps))


def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=0.0):
  """Per-pair reward-model loss -log s(r_c - r_r - margin)."""
  return -jax.nn.log_sigmoid(chosen_rewards - rejected_rewards - margin)


# ---------------------------------------------------------------------------- batch helpers


def sequence_logps(logits_BxLxV, targets_BxL, weights_BxL):
  """(sum, count) over the weighted tokens of each row, in float32."""
  logps_BxL = -optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  weights_BxL = weights_BxL.astype(jnp.float32)
  return jnp.sum(logps_BxL * weights_BxL, -1), jnp.sum(weights_BxL, -1)


def pairs(x_B):
  """[2P, ...] rows -> (chosen [P, ...], rejected [P, ...])."""
  if x_B.shape[0] % 2:
    raise ValueError(f"a preference batch needs an even number of rows (chosen, rejected), "
                     f"got {x_B.shape[0]}")
  x_Px2 = x_B.reshape(x_B.shape[0] // 2, 2, *x_B.shape[1:])
  return x_Px2[:, 0], x_Px2[:, 1]


def pair_weights(batch):
  """1 for a real pair (both completions carry loss weight), 0 for a padding pair."""
  if "pair_weights" in batch:
    return pairs(batch["pair_weights"].astype(jnp.float32))[0]
  rows_B = (jnp.sum(batch["loss_weights"], -1) > 0).astype(jnp.float32)
  chosen, rejected = pairs(rows_B)
  return chosen * rejected


def _sums(loss_P, correct_P, weight_P, **metrics_P):
  sums = dict(loss_sum=jnp.sum(loss_P * weight_P), weight_sum=jnp.sum(weight_P),
              correct_sum=jnp.sum(correct_P.astype(jnp.float32) * weight_P),
              z_loss_sum=jnp.zeros((), jnp.float32))
  for name, value_P in metrics_P.items():
    sums[f"{name}_sum"] = jnp.sum(value_P.astype(jnp.float32) * weight_P)
  return sums


def _pair_metrics(sums, names):
  pairs_seen = jnp.maximum(sums["weight_sum"], 1e-9)
  return {name: sums[f"{name}_sum"] / pairs_seen for name in names if f"{name}_sum" in sums}


@dataclasses.dataclass(frozen=True)
class _PairTask:
  """Loss = mean over the pairs of the global batch; accuracy = preference accuracy."""

  def totals(self, batch):
    return {"pairs": jnp.maximum(jnp.sum(pair_weights(batch)), 1.0)}

  def loss(self, outputs, batch, totals):
    sums = self.pair_sums(outputs, batch)
    return sums["loss_sum"] / totals["pairs"], sums

  def eval_sums(self, outputs, batch):
    sums = self.pair_sums(outputs, batch)
    return {k: sums[k] for k in ("loss_sum", "weight_sum", "correct_sum")}

  def step_metrics(self, sums):
    return _pair_metrics(sums, self.METRICS)


@dataclasses.dataclass(frozen=True)
class RewardModel(_PairTask):
  """Bradley-Terry on class_logits[:, 0] (model.num_labels = 1), read at each row's last token;
  `batch['margins']` ([2P], the pair's margin on both rows) when task.margin_field is set."""
  name: str = "reward_model"
  METRICS = ("chosen_reward", "rejected_reward", "reward_margin")

  def pair_sums(self, outputs, batch):
    logits_BxC = base.require_output(outputs, "class_logits", self.name, "set model.num_labels=1")
    if logits_BxC.shape[-1] != 1:
      raise ValueError(f"task 'reward_model' needs model.num_labels=1; class_logits has "
                       f"{logits_BxC.shape[-1]} columns")
    chosen, rejected = pairs(logits_BxC[:, 0])
    margin = pairs(batch["margins"])[0] if "margins" in batch else 0.0
    return _sums(bradley_terry_loss(chosen, rejected, margin), chosen > rejected,
                 pair_weights(batch), chosen_reward=chosen, rejected_reward=rejected,
                 reward_margin=chosen - rejected)


@dataclasses.dataclass(frozen=True)
class DirectPreference(_PairTask):
  """DPO, IPO, SimPO or ORPO (`name`) on the completions' log-probabilities."""
  name: str = "dpo"
  beta: float = 0.1
  label_smoothing: float = 0.0
  simpo_gamma: float = 0.5
  METRICS = ("chosen_reward", "rejected_reward", "reward_margin", "chosen_logps",
             "rejected_logps", "nll_loss")

  @property
  def uses_reference(self) -> bool:
    return self.name not in REFERENCE_FREE

  def pair_sums(self, outputs, batch):
    logits = base.require_output(outputs, "logits", self.name, "a language-model head")
    logps_B, counts_B = sequence_logps(logits, batch["targets"], batch["loss_weights"])
    counts_B = jnp.maximum(counts_B, 1.0)
    weight_P = pair_weights(batch)
    chosen, rejected = pairs(logps_B)
    chosen_n, rejected_n = pairs(counts_B)
    metrics = dict(chosen_logps=chosen, rejected_logps=rejected, nll_loss=-chosen / chosen_n)
    if self.name in REFERENCE_FREE:
      chosen_mean, rejected_mean = chosen / chosen_n, rejected / rejected_n
      if self.name == "simpo":
        loss = simpo_loss(chosen_mean, rejected_mean, self.beta, self.simpo_gamma,
                          self.label_smoothing)
      else:
        loss = -chosen_mean + self.beta * orpo_odds_loss(chosen_mean, rejected_mean)
      rewards = (self.beta * chosen_mean, self.beta * rejected_mean)
    else:
      ref_chosen, ref_rejected = pairs(self._reference_logps(outputs, batch))
      chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
      if self.name == "ipo":
        loss = ipo_loss(chosen_ratio / chosen_n, rejected_ratio / rejected_n, self.beta)
      else:
        loss = dpo_loss(chosen_ratio, rejected_ratio, self.beta, self.label_smoothing)
      rewards = (self.beta * chosen_ratio, self.beta * rejected_ratio)
    margin = rewards[0] - rewards[1]
    return _sums(loss, margin > 0, weight_P, chosen_reward=rewards[0],
                 rejected_reward=rewards[1], reward_margin=margin, **metrics)

  def _reference_logps(self, outputs, batch):
    if "reference_logps" in batch:
      return batch["reference_logps"].astype(jnp.float32)
    reference = outputs.get("reference")
    if reference is None:
      raise ValueError(f"task {self.name!r} needs the reference model's log-probabilities: "
                       "task.reference='in_step' (frozen reference parameters) or "
                       "'precomputed' (batch field 'reference_logps')")
    return sequence_logps(reference["logits"], batch["targets"], batch["loss_weights"])[0]
