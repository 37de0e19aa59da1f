"""Pruning: magnitude masks (per kernel or global, one shot or on Zhu & Gupta's cubic
schedule), 2:4 semi-structured masks, and structured removal of attention heads and MLP
neurons that exports a smaller model.

During training the masks live in the optimizer (`masked_updates`, the last transform of the
chain): a masked weight is set to zero and its updates are dropped, so it stays zero through
fine-tuning without any change to the model code.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from llm_jax.compress import ptq
from llm_jax.peft import quantize

PATTERNS = ("unstructured", "2:4")


def check_sparsity(sparsity: float, field: str = "pruning.sparsity") -> None:
  if not 0.0 <= float(sparsity) < 1.0:
    raise ValueError(f"{field}={sparsity}: expected a fraction in [0, 1)")


def cubic_sparsity(step, final: float, begin: int, end: int):
  """Zhu & Gupta (2017): s_t = s_f (1 - (1 - (t - t0) / (t1 - t0))^3), s_f from t1 on."""
  if end <= begin:
    return jnp.where(step >= begin, final, 0.0)
  progress = jnp.clip((step - begin) / (end - begin), 0.0, 1.0)
  return jnp.where(step >= begin, final * (1.0 - (1.0 - progress) ** 3), 0.0)


def _keep_largest(magnitude, sparsity):
  """True for the 1 - sparsity largest entries of `magnitude` (ties kept)."""
  threshold = jnp.quantile(magnitude.reshape(-1).astype(jnp.float32), sparsity)
  return jnp.where(sparsity > 0, magnitude > threshold, True)


def n_of_m_mask(kernel, layer: str, n: int = 2, m: int = 4):
  """Keeps the n largest of every m consecutive contracted weights of each output channel."""
  contract, lead = ptq.contract_dims_for(layer), ptq.lead_dims_for(layer)
  w_FxC = quantize.as_matrix(kernel, contract, lead)
  c = w_FxC.shape[-1]
  if c % m:
    raise ValueError(f"{layer}/kernel: {n}:{m} pruning needs the contracted dimension {c} to be "
                     f"a multiple of {m}")
  groups = jnp.abs(w_FxC).reshape(*w_FxC.shape[:-1], c // m, m)
  rank = jnp.argsort(jnp.argsort(-groups, axis=-1), axis=-1)
  keep_FxC = (rank < n).reshape(w_FxC.shape)
  return jnp.swapaxes(keep_FxC, -1, -2).reshape(jnp.shape(kernel))


def masks(params, sparsity, pattern: str = "unstructured", scope: str = "layer",
          targets: str = r"(attention|mlp)/"):
  """{layer: keep mask} of the targeted kernels (jittable; `sparsity` may be traced)."""
  if pattern not in PATTERNS:
    raise ValueError(f"pruning.pattern={pattern!r}: expected one of {PATTERNS}")
  if scope not in ("layer", "global"):
    raise ValueError(f"pruning.scope={scope!r}: expected 'layer' or 'global'")
  kernels = ptq.dense_kernels(params, targets)
  if not kernels:
    raise ValueError(f"pruning.targets={targets!r} matches no dense layer")
  if pattern == "2:4":
    return {layer: n_of_m_mask(k, layer) for layer, k in kernels.items()}
  if scope == "layer":
    return {layer: _keep_largest(jnp.abs(k), sparsity) for layer, k in kernels.items()}
  everything = jnp.concatenate([jnp.abs(k).reshape(-1) for k in kernels.values()])
  threshold = jnp.quantile(everything, sparsity)
  return {layer: jnp.where(sparsity > 0, jnp.abs(k) > threshold, True)
          for layer, k in kernels.items()}


def apply_masks(params, keep: dict):
  kernels = ptq.dense_kernels(params, ".")
  return ptq.replace_kernels(params, {layer: jnp.where(mask, kernels[layer], 0)
                                      for layer, mask in keep.items()})


def masked_updates(section) -> optax.GradientTransformation:
  """Sets pruned weights to zero and drops their updates; the masks are recomputed from the
  weights' magnitudes every `update_every` steps from begin_step to end_step (cubic ramp)."""
  check_sparsity(section.sparsity)
  final = float(section.sparsity) if section.pattern == "unstructured" else 1.0
  begin, end = int(section.begin_step), int(section.end_step)
  every = max(int(section.update_every), 1)

  def full_masks(params, step):
    s = cubic_sparsity(step, final, begin, end)
    keep = masks(params, s, section.pattern, section.scope, section.targets)
    tree = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    kernels = ptq.dense_kernels(tree, ".")
    return ptq.replace_kernels(tree, {layer: keep.get(layer, kernels[layer])
                                      for layer in kernels})

  def init(params):
    return {"count": jnp.zeros((), jnp.int32), "keep": full_masks(params, jnp.int32(begin - 1))}

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("pruning needs the parameters in the optimizer update")
    step = state["count"]
    due = (step >= begin) & (step <= max(end, begin)) & ((step - begin) % every == 0)
    keep = jax.lax.cond(due, lambda: full_masks(params, step), lambda: state["keep"])
    updates = jax.tree.map(lambda u, k, p: jnp.where(k, u, -p), updates, keep, params)
    return updates, {"count": step + 1, "keep": keep}

  return optax.GradientTransformation(init, update)


def wrap_optimizer(cfg, tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` followed by masked_updates when config.pruning.sparsity > 0 (or a 2:4 pattern)."""
  section = cfg.get("pruning")
  if section is None or (float(section.sparsity) == 0 and section.pattern == "unstructured"):
    return tx
  return optax.chain(tx, masked_updates(section))


# ------------------------------------------------------------------ structured (export smaller)


def _layers(params):
  stack = params["decoder"] if "decoder" in params else params["encoder"]
  names = sorted((k for k in stack if k.startswith("layers_")), key=lambda k: int(k[7:]))
  return stack, names


def neuron_importance(mlp) -> np.ndarray:
  """|| row of wi(s) || * || column of wo || per MLP neuron."""
  ins = [np.asarray(mlp[k]["kernel"]) for k in ("wi", "wi_0", "wi_1") if k in mlp]
  score = np.ones(ins[0].shape[-1])
  for w in ins:
    score = score * np.linalg.norm(w, axis=0)
  return score * np.linalg.norm(np.asarray(mlp["wo"]["kernel"]), axis=1)


def head_importance(attention) -> np.ndarray:
  """Product of the norms of each head's query, key, value and output slices."""
  score = np.ones(np.shape(attention["query"]["kernel"])[1])
  for name in ("query", "key", "value"):
    score = score * np.linalg.norm(np.asarray(attention[name]["kernel"]), axis=(0, 2))
  return score * np.linalg.norm(np.asarray(attention["out"]["kernel"]), axis=(1, 2))


def prune_structured(model_cfg, params, sparsity: float, pattern: str):
  """(smaller model config, sliced params): the least important `sparsity` fraction of MLP
  neurons ('neurons') or attention heads ('heads') of every layer removed."""
  check_sparsity(sparsity)
  params = jax.tree.map(np.asarray, params)
  model_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  stack, names = _layers(params)
  if not names:
    raise ValueError("structured pruning needs unrolled layers (layers_0, layers_1, ...)")
  if pattern == "neurons":
    keep = model_cfg.d_ff - int(math.floor(sparsity * model_cfg.d_ff))
    for name in names:
      mlp = stack[name]["mlp"]
      index = np.sort(np.argsort(-neuron_importance(mlp))[:keep])
      for k in ("wi", "wi_0", "wi_1"):
        if k in mlp:
          mlp[k] = {p: np.take(v, index, axis=-1) for p, v in mlp[k].items()}
      mlp["wo"] = {**mlp["wo"], "kernel": np.take(mlp["wo"]["kernel"], index, axis=0)}
    model_cfg.d_ff = keep
  elif pattern == "heads":
    heads = model_cfg.num_heads
    if (model_cfg.get("num_kv_heads") or heads) != heads:
      raise ValueError("head pruning supports num_kv_heads == num_heads only")
    keep = heads - int(math.floor(sparsity * heads))
    if keep < 1:
      raise ValueError(f"--sparsity={sparsity} removes every one of the {heads} heads")
    head_dim = model_cfg.get("head_dim") or model_cfg.d_model // heads
    for name in names:
      attention = stack[name]["self_attention"]
      index = np.sort(np.argsort(-head_importance(attention))[:keep])
      for k in ("query", "key", "value"):
        attention[k] = {p: np.take(v, index, axis=1 if p == "kernel" else 0)
                        for p, v in attention[k].items()}
      attention["out"] = {**attention["out"],
                          "kernel": np.take(attention["out"]["kernel"], index, axis=0)}
    model_cfg.num_heads = keep
    if model_cfg.get("num_kv_heads"):
      model_cfg.num_kv_heads = keep
    model_cfg.head_dim = head_dim
  else:
    raise ValueError(f"structured pruning pattern {pattern!r}: expected 'heads' or 'neurons'")
  return model_cfg, params


def prune_model(cfg, params, *, sparsity: float, pattern: str, scope: str, targets: str):
  """The CLI's --method=prune: (params, config) masked in place or structurally smaller."""
  check_sparsity(sparsity, "--sparsity")
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  if pattern in ("heads", "neurons"):
    cfg.model, params = prune_structured(cfg.model, params, sparsity, pattern)
    return params, cfg
  targets = r"(attention|mlp)/" if targets == "." else targets
  keep = masks(params, sparsity, pattern, scope, targets)
  pruned = jax.tree.map(np.asarray, apply_masks(params, keep))
  cfg.pruning.update(sparsity=float(sparsity), pattern=pattern, scope=scope, targets=targets)
  return pruned, cfg
