"""Mixture-of-Experts feed-forward block (GShard, Switch Transformer, Mixtral, ST-MoE).

A float32 router scores every token against cfg.moe.num_experts experts:
  'topk'           softmax, then each token's top_k experts; with normalize_top_k their gates
                   are renormalised to sum to 1 (Mixtral), else they keep their softmax values.
  'switch'         top_k = 1, the gate is the chosen expert's softmax probability.
  'expert_choice'  each expert takes its `capacity` highest-scoring tokens of a group (Zhou et
                   al. 2022); it looks at the whole row, so it is not causal.
Dispatch:
  dropless (capacity_factor 0): the token copies are sorted by expert and each expert's rows go
    through one grouped matmul (jax.lax.ragged_dot); no token is dropped.
  capacity (capacity_factor > 0): each group (a batch row) sends at most `capacity` tokens to
    each expert, first choices of all tokens before second choices, earlier positions first;
    a token over capacity gets nothing from that expert (a token dropped by all of them passes
    through the residual only). The dispatched tensor [expert, group, capacity, embed] carries
    the 'expert' logical axis, so with experts sharded the partitioner exchanges tokens between
    devices (all-to-all) instead of gathering weights.
num_shared_experts > 0 adds experts every token passes through (gate 1).

Auxiliary values are sown into the AUX_COLLECTION ('aux_loss') when it is mutable (training):
per layer the Switch load-balancing loss E * sum_e f_e P_e (f_e: the fraction of routed token
copies choosing expert e, P_e: its mean router probability; 1 for uniform routing), the router
z-loss mean(logsumexp(logits)^2), and the per-expert load f. Padding tokens (segment id 0) are
left out of them and of capacity dispatch. `aux_outputs` reduces the collection over layers.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import layers

Array = jax.Array

AUX_COLLECTION = "aux_loss"
ROUTERS = ("topk", "switch", "expert_choice")


def enabled(cfg) -> bool:
  moe = cfg.get("moe")
  return moe is not None and moe.num_experts > 0


def is_moe_layer(cfg, index: int) -> bool:
  """Whether layer `index` of a stack uses the MoE block."""
  return enabled(cfg) and index % cfg.moe.every == cfg.moe.offset


def top_k(moe_cfg) -> int:
  return 1 if moe_cfg.router == "switch" else moe_cfg.top_k


def validate_moe_config(cfg) -> None:
  """Raises ValueError naming the model.moe field that cannot work."""
  if not enabled(cfg):
    if cfg.get("moe") is not None and cfg.moe.num_experts < 0:
      raise ValueError(f"model.moe.num_experts must be >= 0; got {cfg.moe.num_experts}")
    return
  moe = cfg.moe
  if moe.router not in ROUTERS:
    raise ValueError(f"model.moe.router={moe.router!r} is not one of {ROUTERS}")
  k = top_k(moe)
  if not 1 <= k <= moe.num_experts:
    raise ValueError(f"model.moe.top_k={k} must be between 1 and model.moe.num_experts="
                     f"{moe.num_experts}")
  if moe.every < 1 or not 0 <= moe.offset < moe.every:
    raise ValueError(f"model.moe.every={moe.every} must be >= 1 and model.moe.offset="
                     f"{moe.offset} in [0, every)")
  if (moe.capacity_factor or 0) < 0:
    raise ValueError(f"model.moe.capacity_factor must be >= 0; got {moe.capacity_factor}")
  if moe.router == "expert_choice" and not moe.capacity_factor:
    raise ValueError("model.moe.router='expert_choice' needs model.moe.capacity_factor > 0")
  if moe.num_shared_experts < 0:
    raise ValueError(f"model.moe.num_shared_experts must be >= 0; got {moe.num_shared_experts}")
  if moe.d_ff is not None and moe.d_ff <= 0:
    raise ValueError(f"model.moe.d_ff must be positive; got {moe.d_ff}")
  if cfg.scan_layers and moe.every != 1:
    raise ValueError(f"model.scan_layers=True needs identical layers: model.moe.every="
                     f"{moe.every} must be 1")


def capacity(moe_cfg, group_size: int) -> int:
  """Token slots per expert and group."""
  slots = moe_cfg.capacity_factor * group_size * top_k(moe_cfg) / moe_cfg.num_experts
  return max(1, math.ceil(slots))


def route_top_k(probs_TxE: Array, k: int, normalize: bool) -> tuple[Array, Array]:
  """(gates [T, k], expert ids [T, k]) of each token's k most probable experts."""
  gates_TxK, experts_TxK = jax.lax.top_k(probs_TxE, k)
  if normalize:
    gates_TxK = gates_TxK / jnp.sum(gates_TxK, axis=-1, keepdims=True)
  return gates_TxK, experts_TxK


def load_balance_loss(probs_TxE: Array, experts_TxK: Array, valid_T: Array) -> tuple[Array, Array]:
  """(Switch load-balancing loss E * sum_e f_e P_e, expert load f [E]) over the valid tokens."""
  num_experts = probs_TxE.shape[-1]
  valid_T = valid_T.astype(jnp.float32)
  chosen_TxE = jnp.sum(jax.nn.one_hot(experts_TxK, num_experts, dtype=jnp.float32), axis=1)
  copies = jnp.maximum(jnp.sum(valid_T) * experts_TxK.shape[-1], 1.0)
  load_E = jnp.sum(chosen_TxE * valid_T[:, None], axis=0) / copies
  mean_prob_E = jnp.sum(probs_TxE * valid_T[:, None], axis=0) / jnp.maximum(jnp.sum(valid_T), 1.0)
  return num_experts * jnp.sum(load_E * mean_prob_E), load_E


def router_z_loss(logits_TxE: Array, valid_T: Array) -> Array:
  valid_T = valid_T.astype(jnp.float32)
  z_T = jax.nn.logsumexp(logits_TxE, axis=-1)
  return jnp.sum(jnp.square(z_T) * valid_T) / jnp.maximum(jnp.sum(valid_T), 1.0)


def capacity_dispatch(experts_GxSxK: Array, gates_GxSxK: Array, valid_GxS: Array,
                      num_experts: int, slots: int) -> tuple[Array, Array]:
  """(dispatch, combine) [G, S, E, C]: token s of group g sits in slot c of expert e.

  Slots fill in order of (choice rank, position); copies beyond `slots` are dropped.
  """
  groups, size, k = experts_GxSxK.shape
  onehot_GxKxSxE = jax.nn.one_hot(jnp.swapaxes(experts_GxSxK, 1, 2), num_experts,
                                  dtype=jnp.int32) * valid_GxS[:, None, :, None]
  onehot_GxNxE = onehot_GxKxSxE.reshape(groups, k * size, num_experts)
  slot_GxNxE = jnp.cumsum(onehot_GxNxE, axis=1) - 1
  kept_GxNxE = onehot_GxNxE * (slot_GxNxE < slots)
  dispatch_GxNxExC = jax.nn.one_hot(slot_GxNxE, slots, dtype=jnp.float32) * kept_GxNxE[..., None]
  dispatch_GxKxSxExC = dispatch_GxNxExC.reshape(groups, k, size, num_experts, slots)
  combine_GxSxExC = jnp.einsum("gksec,gsk->gsec", dispatch_GxKxSxExC, gates_GxSxK)
  return jnp.sum(dispatch_GxKxSxExC, axis=1), combine_GxSxExC


def expert_choice_dispatch(probs_GxSxE: Array, valid_GxS: Array,
                           slots: int) -> tuple[Array, Array]:
  """(dispatch, combine) [G, S, E, C]: each expert's `slots` most probable tokens per group."""
  size = probs_GxSxE.shape[1]
  scores_GxExS = jnp.swapaxes(jnp.where(valid_GxS[..., None] > 0, probs_GxSxE, -1.0), 1, 2)
  gates_GxExC, tokens_GxExC = jax.lax.top_k(scores_GxExS, min(slots, size))
  taken_GxExC = (gates_GxExC >= 0).astype(jnp.float32)
  dispatch_GxSxExC = jnp.einsum("gecs,gec->gsec",
                                jax.nn.one_hot(tokens_GxExC, size, dtype=jnp.float32),
                                taken_GxExC)
  combine_GxSxExC = dispatch_GxSxExC * gates_GxExC[:, None]
  return dispatch_GxSxExC, combine_GxSxExC


class MoE(nn.Module):
  """Router + routed experts (+ shared experts): x [B, L, D] -> [B, L, D]."""
  cfg: object
  init_scale: float = 1.0  # DeepNet beta

  def _expert_weights(self, name: str, count: int, first_axis: Optional[str]) -> dict:
    """Kernels of `count` FFN experts: wi_0/wi_1 (gated) or wi [count, D, F], wo [count, F, D]."""
    cfg = self.cfg
    d_ff = cfg.moe.d_ff or cfg.d_ff
    init = nn.with_logical_partitioning
    std_init = layers.kernel_init(cfg.init_std, self.init_scale)
    param_dtype, dtype = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    names = ("wi_0", "wi_1") if cfg.activation in layers.GATED_ACTIVATIONS else ("wi",)
    weights = {}
    for wi in names:
      weights[wi] = self.param(f"{name}{wi}", init(std_init, (first_axis, "embed", "mlp")),
                               (count, cfg.d_model, d_ff), param_dtype).astype(dtype)
    weights["wo"] = self.param(f"{name}wo", init(std_init, (first_axis, "mlp", "embed")),
                               (count, d_ff, cfg.d_model), param_dtype).astype(dtype)
    return weights

  def _activate(self, project) -> Array:
    """act(x wi_0) * x wi_1 or act(x wi), with `project(name)` computing x w_name."""
    activation = self.cfg.activation
    if activation in layers.GATED_ACTIVATIONS:
      act = layers.get_activation(layers.GATED_ACTIVATIONS[activation])
      return act(project("wi_0")) * project("wi_1")
    return layers.get_activation(activation)(project("wi"))

  @nn.compact
  def __call__(self, x_BxLxD: Array, segment_ids_BxL: Optional[Array] = None,
               deterministic: bool = True) -> Array:
    cfg, moe = self.cfg, self.cfg.moe
    batch, length, d_model = x_BxLxD.shape
    num_experts, k = moe.num_experts, top_k(moe)
    dtype = jnp.dtype(cfg.dtype)
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones((batch, length), jnp.int32)
    valid_BxL = (segment_ids_BxL > 0).astype(jnp.int32)

    router_kernel_DxE = self.param(
        "router", nn.with_logical_partitioning(layers.kernel_init(cfg.init_std), ("embed", None)),
        (d_model, num_experts), jnp.dtype(cfg.param_dtype))
    logits_BxLxE = jnp.einsum("bld,de->ble", x_BxLxD.astype(jnp.float32),
                              router_kernel_DxE.astype(jnp.float32))
    probs_BxLxE = jax.nn.softmax(logits_BxLxE, axis=-1)
    experts = self._expert_weights("", num_experts, "expert")

    if moe.router == "expert_choice":
      dispatch, combine = expert_choice_dispatch(probs_BxLxE, valid_BxL, capacity(moe, length))
      chosen_BxLxK = jnp.argmax(probs_BxLxE, axis=-1)[..., None]  # for the load statistics
      y_BxLxD = self._capacity_ffn(x_BxLxD, dispatch, combine, experts)
    else:
      gates_BxLxK, chosen_BxLxK = route_top_k(
          probs_BxLxE, k, moe.normalize_top_k and moe.router == "topk")
      if moe.capacity_factor:
        dispatch, combine = capacity_dispatch(chosen_BxLxK, gates_BxLxK, valid_BxL, num_experts,
                                              capacity(moe, length))
        y_BxLxD = self._capacity_ffn(x_BxLxD, dispatch, combine, experts)
      else:
        y_BxLxD = self._dropless_ffn(x_BxLxD, chosen_BxLxK, gates_BxLxK, experts)

    if moe.num_shared_experts:
      shared = self._expert_weights("shared_", moe.num_shared_experts, None)
      h_BxLxSxF = self._activate(
          lambda name: jnp.einsum("bld,sdf->blsf", x_BxLxD.astype(dtype), shared[name]))
      y_BxLxD = y_BxLxD + jnp.einsum("blsf,sfd->bld", h_BxLxSxF, shared["wo"])

    flat = lambda a: a.reshape(batch * length, *a.shape[2:])
    balance, load_E = load_balance_loss(flat(probs_BxLxE), flat(chosen_BxLxK), flat(valid_BxL))
    self.sow(AUX_COLLECTION, "load_balance_loss", balance)
    self.sow(AUX_COLLECTION, "z_loss", router_z_loss(flat(logits_BxLxE), flat(valid_BxL)))
    self.sow(AUX_COLLECTION, "expert_load", load_E)
    return nn.with_logical_constraint(y_BxLxD.astype(dtype), ("batch", "length", "embed"))

  def _capacity_ffn(self, x_GxSxD, dispatch_GxSxExC, combine_GxSxExC, experts) -> Array:
    dtype = jnp.dtype(self.cfg.dtype)
    x_ExGxCxD = jnp.einsum("gsec,gsd->egcd", dispatch_GxSxExC.astype(dtype), x_GxSxD.astype(dtype))
    x_ExGxCxD = nn.with_logical_constraint(x_ExGxCxD, ("expert", "batch", None, "embed"))
    h_ExGxCxF = self._activate(lambda name: jnp.einsum("egcd,edf->egcf", x_ExGxCxD, experts[name]))
    h_ExGxCxF = nn.with_logical_constraint(h_ExGxCxF, ("expert", "batch", None, "mlp"))
    y_ExGxCxD = jnp.einsum("egcf,efd->egcd", h_ExGxCxF, experts["wo"])
    y_ExGxCxD = nn.with_logical_constraint(y_ExGxCxD, ("expert", "batch", None, "embed"))
    y_GxSxD = jnp.einsum("gsec,egcd->gsd", combine_GxSxExC.astype(dtype), y_ExGxCxD)
    return nn.with_logical_constraint(y_GxSxD, ("batch", "length", "embed"))

  def _dropless_ffn(self, x_BxLxD, experts_BxLxK, gates_BxLxK, experts) -> Array:
    """Every token copy through its expert: sorted by expert, one ragged_dot per kernel."""
    batch, length, d_model = x_BxLxD.shape
    k, num_experts = experts_BxLxK.shape[-1], self.cfg.moe.num_experts
    dtype = jnp.dtype(self.cfg.dtype)
    x_TxD = x_BxLxD.reshape(-1, d_model).astype(dtype)
    experts_N = experts_BxLxK.reshape(-1)
    order_N = jnp.argsort(experts_N, stable=True)
    x_NxD = jnp.take(x_TxD, order_N // k, axis=0)
    group_sizes_E = jnp.bincount(experts_N, length=num_experts).astype(jnp.int32)
    h_NxF = self._activate(lambda name: jax.lax.ragged_dot(x_NxD, experts[name], group_sizes_E))
    y_NxD = jax.lax.ragged_dot(h_NxF, experts["wo"], group_sizes_E)
    y_NxD = jnp.zeros_like(y_NxD).at[order_N].set(y_NxD)
    y_TxKxD = y_NxD.reshape(-1, k, d_model)
    y_TxD = jnp.einsum("tkd,tk->td", y_TxKxD, gates_BxLxK.reshape(-1, k).astype(dtype))
    return y_TxD.reshape(batch, length, d_model)


def aux_outputs(aux_collection, moe_cfg) -> dict[str, Array]:
  """The sown per-layer values as scalars, averaged over the MoE layers:
  'moe_load_balance_loss', 'moe_z_loss', 'moe_expert_load_{e}' for each expert e, and
  'moe_aux_loss' (their weighted sum for the training loss). Empty without MoE layers."""
  values = {"load_balance_loss": [], "z_loss": [], "expert_load": []}
  for path, leaf in jax.tree_util.tree_flatten_with_path(aux_collection)[0]:
    names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    if names and names[-1] in values:
      values[names[-1]].append(leaf)
  if not values["load_balance_loss"]:
    return {}
  # A scanned stack sows one value per layer along a leading axis.
  mean = lambda leaves, tail: jnp.mean(jnp.concatenate(
      [jnp.reshape(x, (-1, *tail)) for x in leaves]), axis=0)
  balance = mean(values["load_balance_loss"], ())
  z_loss = mean(values["z_loss"], ())
  load_E = mean(values["expert_load"], (moe_cfg.num_experts,))
  return {
      "moe_load_balance_loss": balance,
      "moe_z_loss": z_loss,
      "moe_aux_loss": moe_cfg.load_balance_coef * balance + moe_cfg.z_loss_coef * z_loss,
      **{f"moe_expert_load_{e}": load_E[e] for e in range(moe_cfg.num_experts)},
  }
