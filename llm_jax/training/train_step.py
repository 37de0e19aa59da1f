"""Train state, its shardings, and the one jitted train step (and eval step) for every task.

Parameters are float32 masters, stored unboxed; their shardings come from the models' logical
axis names through the config's rule table. The state splits them into `params` (trainable:
gradients and optimizer state) and `frozen` (a frozen base, frozen layers; optionally stored
quantized, as QLoRA does). The loss comes from the task (llm_jax/tasks): sums over the GLOBAL
batch divided by totals of the whole batch, so every mesh and every microbatching computes the
same number.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax

from llm_jax import sharding
from llm_jax import tasks
from llm_jax.models import moe
from llm_jax.training import optimizer as optimizer_lib
from llm_jax.training import partition

INIT_LENGTH = 8  # sequence length of the dummy batch used to create parameters
# On CPU, a step whose saved activations outgrow the last-level cache runs faster as gradient
# accumulation over slices of the batch (the same gradient) whose activations stay in cache,
# as long as the weights are small enough to be re-read for every slice.
CPU_ACTIVATION_BUDGET_BYTES = 32 * 2**20
CPU_MAX_PARAM_BYTES = 8 * 2**20
# The frozen reference policy of a preference task (DPO, IPO) lives in TrainState.frozen under
# this key: a copy of the initial parameters, unless only LoRA parameters train (then the
# reference is the model with its adapters off: zero LoRA factors, no copy).
REFERENCE = "reference"
# The frozen teacher of a distillation run (config.distill.teacher) lives under this key.
TEACHER = "teacher"


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any  # trainable parameters
  opt_state: Any  # of `params` only
  frozen: Any = dataclasses.field(default_factory=dict)  # no gradient, no optimizer state


def model_input_fields(family: str) -> tuple[str, ...]:
  """Batch fields the model of `family` takes as keyword arguments."""
  from llm_jax.models import MODEL_INPUT_FIELDS  # pylint: disable=g-import-not-at-top
  if family not in MODEL_INPUT_FIELDS:
    raise ValueError(f"model.family={family!r}: expected one of {sorted(MODEL_INPUT_FIELDS)}")
  return tuple(MODEL_INPUT_FIELDS[family])


def init_batch(cfg: ml_collections.ConfigDict, batch_size: int) -> dict[str, np.ndarray]:
  """A dummy batch of the model's input fields: one segment, positions 0..INIT_LENGTH-1."""
  batch = {}
  for field in model_input_fields(cfg.model.family):
    if field.endswith("segment_ids"):
      value = np.ones((batch_size, INIT_LENGTH), np.int32)
    elif field.endswith("positions"):
      value = np.broadcast_to(np.arange(INIT_LENGTH, dtype=np.int32), (batch_size, INIT_LENGTH))
    else:
      value = np.zeros((batch_size, INIT_LENGTH), np.int32)
    batch[field] = value
  return batch


def activation_bytes(model_cfg: ml_collections.ConfigDict, batch) -> int:
  """Rough size of the activations the backward pass keeps: per token and layer about
  12 d_model + 3 d_ff + 3 heads x length values (norms, projections, MLP, attention weights)."""
  heads = model_cfg.num_heads
  stacks = [("inputs", model_cfg.num_layers)]
  if model_cfg.family == "encoder_decoder":
    stacks.append(("decoder_inputs", model_cfg.num_decoder_layers or model_cfg.num_layers))
  values = 0
  for field, layers in stacks:
    if field in batch:
      rows, length = np.shape(batch[field])[:2]
      per_token = 12 * model_cfg.d_model + 3 * model_cfg.d_ff + 3 * heads * length
      values += rows * length * layers * per_token
  return values * jnp.dtype(model_cfg.dtype).itemsize


def cpu_batch_slices(model_cfg: ml_collections.ConfigDict, batch, param_bytes: int,
                     shards: int) -> int:
  """Slices of the batch to accumulate gradients over on CPU (1: the whole batch at once).

  The fewest slices that bring each slice's activations under CPU_ACTIVATION_BUDGET_BYTES
  (else the most slices), each slice still splitting over the `shards` batch shards; 1 when
  the parameters exceed CPU_MAX_PARAM_BYTES.
  """
  rows = np.shape(batch["targets"])[0]
  if param_bytes > CPU_MAX_PARAM_BYTES:
    return 1
  valid = [m for m in range(1, rows + 1) if rows % m == 0 and (rows // m) % shards == 0]
  total = activation_bytes(model_cfg, batch)
  fitting = [m for m in valid if total / m <= CPU_ACTIVATION_BUDGET_BYTES]
  return fitting[0] if fitting else valid[-1]


def _num_layers(model_cfg) -> int:
  return max(model_cfg.num_layers, model_cfg.get("num_decoder_layers") or 0)


def _make_optimizer(cfg) -> optax.GradientTransformation:
  from llm_jax.compress import pruning  # pylint: disable=g-import-not-at-top
  tx = optimizer_lib.make_optimizer(cfg.optimizer, cfg.train.steps, _num_layers(cfg.model))
  return pruning.wrap_optimizer(cfg, tx)  # masks of config.pruning, when on


def _quantization(cfg):
  """(kind, block size, regex) of the frozen base's storage; kind 'none' stores floats. As in
  QLoRA, every frozen dense kernel is quantized (embeddings, norms and biases stay float)."""
  peft_cfg = cfg.model.get("peft")
  if peft_cfg is None or peft_cfg.base_quantization == "none":
    return "none", 0, ""
  if peft_cfg.base_quantization not in ("nf4", "int8"):
    raise ValueError(f"model.peft.base_quantization={peft_cfg.base_quantization!r}: expected "
                     "'none', 'nf4' or 'int8'")
  return peft_cfg.base_quantization, peft_cfg.quantization_block_size, "."


def _dequantize(frozen):
  from llm_jax.peft import quantize  # pylint: disable=g-import-not-at-top
  return quantize.dequantize_tree(frozen)


def model_frozen(frozen):
  """The frozen parameters of the model itself (without a reference policy)."""
  return {k: v for k, v in frozen.items() if k not in (REFERENCE, TEACHER)}


def full_params(state: TrainState):
  """Every parameter of the model (trainable and frozen, dequantized) as one tree."""
  return partition.merge(state.params, _dequantize(model_frozen(state.frozen)))


def _reference_copy(cfg, trainable_names) -> bool:
  """Whether the run keeps a copy of its initial parameters as the frozen reference policy."""
  if not _reference_in_step(cfg):
    return False
  lora_only = all(name.rsplit("/", 1)[-1] in ("lora_a", "lora_b") for name in trainable_names)
  return not lora_only


def _reference_in_step(cfg) -> bool:
  task = tasks.make_task(cfg)
  return bool(getattr(task, "uses_reference", False)) and cfg.task.reference == "in_step"


def _init_fns(cfg, model, mesh, rules):
  """(rng -> boxed params, params -> TrainState).

  Traced without a mesh in scope: the state's out_shardings place the parameters, and flax's
  DenseGeneral cannot apply a logical constraint to a kernel with several feature axes at init.
  """
  inputs = init_batch(cfg, sharding.batch_shard_count(mesh, rules))
  tx = _make_optimizer(cfg)
  kind, block_size, quantize_regex = _quantization(cfg)
  if cfg.get("task") is not None and cfg.task.get("reference", "in_step") not in (
      "in_step", "precomputed"):
    raise ValueError(f"task.reference={cfg.task.reference!r}: expected 'in_step' or 'precomputed'")

  def init_boxed_params(rng):
    rng_params, rng_dropout = jax.random.split(rng)
    variables = model.init(
        {"params": rng_params, "dropout": rng_dropout}, **inputs, deterministic=True)
    return variables["params"]

  def state_from_params(params, trainable_names, teacher=None):
    trainable, frozen = partition.split(params, trainable_names)
    if kind != "none":
      from llm_jax.peft import quantize  # pylint: disable=g-import-not-at-top
      frozen = quantize.quantize_tree(frozen, quantize_regex, kind, block_size)
    if _reference_copy(cfg, trainable_names):
      frozen = {**frozen, REFERENCE: params}
    if teacher is not None:
      frozen = {**frozen, TEACHER: teacher}
    return TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                      opt_state=tx.init(trainable), frozen=frozen)

  return init_boxed_params, state_from_params


def _logical_specs(abstract_boxed_params):
  """Logical PartitionSpec per parameter; every parameter must carry logical axis names."""
  is_box = lambda x: isinstance(x, nn.Partitioned)

  def spec(path, leaf):
    if not is_box(leaf):
      raise ValueError(
          f"parameter {jax.tree_util.keystr(path)} has no logical axis names; create it with "
          "nn.with_logical_partitioning")
    return PartitionSpec(*leaf.names)

  return jax.tree_util.tree_map_with_path(spec, abstract_boxed_params, is_leaf=is_box)


def _opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, mesh):
  """Optimizer-state leaves that mirror a parameter (same path suffix and shape) share its
  sharding; everything else (counts, Adafactor's factored moments) is replicated."""
  by_path = {}
  for (path, leaf), shard in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                                 jax.tree_util.tree_leaves(param_shardings)):
    by_path[tuple(str(k) for k in path)] = (leaf.shape, shard)
  replicated = NamedSharding(mesh, PartitionSpec())

  def sharding_of(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None:
        shape, shard = match
        return shard if shape == leaf.shape else replicated
    return replicated

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_opt_state)


def _frozen_shardings(abstract_frozen, full_shardings, mesh):
  """A frozen parameter keeps its sharding; the arrays of a quantized kernel (codes, scales)
  keep the kernel's mesh axes on every dimension they still divide, else that dimension is
  replicated (the last axis shrinks by packing and blocking)."""
  by_name = partition.flat(full_shardings)
  out = {}
  for name, leaf in partition.flat(abstract_frozen).items():
    shard = by_name[name.removeprefix(REFERENCE + "/")]
    if isinstance(leaf, jax.ShapeDtypeStruct):
      out[name] = shard
      continue
    def fit(array, spec=shard.spec):
      axes = []
      for dim, size in enumerate(array.shape):
        mesh_axes = spec[dim] if dim < len(spec) else None
        ways = int(np.prod([mesh.shape[a] for a in sharding._as_tuple(mesh_axes)]))  # pylint: disable=protected-access
        axes.append(mesh_axes if size % ways == 0 else None)
      return NamedSharding(mesh, PartitionSpec(*axes))
    out[name] = jax.tree.map(fit, leaf)
  return partition.unflat(out) if out else {}


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """What a run's TrainState looks like: the trainable names, abstract state and shardings."""
  trainable_names: frozenset
  abstract_state: TrainState
  shardings: TrainState
  full_shardings: Any  # of the whole (unsplit) parameter tree


def state_layout(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh) -> StateLayout:
  """Validates that every parameter can be sharded as the rules say and resolves which of them
  train, before anything is compiled."""
  rules = sharding.rules_from_config(cfg)
  sharding.validate_rules(rules, mesh)
  init_boxed_params, state_from_params = _init_fns(cfg, model, mesh, rules)
  rng = jax.random.key(cfg.train.seed)
  with nn.logical_axis_rules(rules):
    abstract_boxed = jax.eval_shape(init_boxed_params, rng)
  abstract_params = nn.unbox(abstract_boxed)
  if partition.peft_enabled(cfg.model.get("peft")):
    from llm_jax.peft import targets  # pylint: disable=g-import-not-at-top
    targets.check_targets(cfg.model, abstract_params)
  names = frozenset(partition.trainable_names(
      partition.flat(abstract_params), cfg.optimizer, cfg.model.get("peft")))
  abstract_teacher, teacher_shardings = _teacher_layout(cfg, mesh, rules)
  abstract_state = jax.eval_shape(lambda p, t: state_from_params(p, names, t), abstract_params,
                                  abstract_teacher)
  full_shardings = sharding.logical_to_mesh_sharding(
      _logical_specs(abstract_boxed), mesh, rules, abstract_params)
  frozen_by_name = full_shardings
  if teacher_shardings is not None:
    frozen_by_name = {**full_shardings, TEACHER: teacher_shardings}
  trainable_shardings, _ = partition.split(full_shardings, names)
  state_shardings = TrainState(
      step=NamedSharding(mesh, PartitionSpec()),
      params=trainable_shardings,
      opt_state=_opt_state_shardings(
          abstract_state.opt_state, abstract_state.params, trainable_shardings, mesh),
      frozen=_frozen_shardings(abstract_state.frozen, frozen_by_name, mesh),
  )
  return StateLayout(names, abstract_state, state_shardings, full_shardings)


def _teacher_layout(cfg, mesh, rules):
  """(abstract params, shardings) of the distillation teacher, or (None, None)."""
  from llm_jax.compress import distill  # pylint: disable=g-import-not-at-top
  if not distill.enabled(cfg):
    return None, None
  teacher = distill.teacher_model(cfg)
  inputs = init_batch(cfg, sharding.batch_shard_count(mesh, rules))
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(
        lambda r: teacher.init(r, **inputs, deterministic=True)["params"], jax.random.key(0))
  abstract = nn.unbox(boxed)
  return abstract, sharding.logical_to_mesh_sharding(_logical_specs(boxed), mesh, rules, abstract)


def abstract_train_state(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh):
  """(abstract TrainState of ShapeDtypeStructs, TrainState of NamedShardings)."""
  layout = state_layout(cfg, model, mesh)
  return layout.abstract_state, layout.shardings


def create_train_state(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh, rng,
                       initial_params: dict[str, np.ndarray] | None = None,
                       layout: StateLayout | None = None):
  """(TrainState, shardings): parameters and optimizer state are created already sharded.

  `initial_params` ({path: array}, e.g. from init_from) replace the random values of those
  parameters before the state is split into trainable and frozen parts. `layout`: the run's
  state_layout, if already built.
  """
  layout = layout or state_layout(cfg, model, mesh)
  rules = sharding.rules_from_config(cfg)
  init_boxed_params, state_from_params = _init_fns(cfg, model, mesh, rules)
  with nn.logical_axis_rules(rules):
    params = jax.jit(lambda r: nn.unbox(init_boxed_params(r)),
                     out_shardings=layout.full_shardings)(rng)
  if initial_params:
    flat_params, flat_shardings = partition.flat(params), partition.flat(layout.full_shardings)
    for name, value in initial_params.items():
      if name not in flat_params:
        raise ValueError(f"initial parameter {name} does not exist in the model")
      if tuple(np.shape(value)) != tuple(flat_params[name].shape):
        raise ValueError(f"initial parameter {name} has shape {np.shape(value)}, the model "
                         f"expects {flat_params[name].shape}")
      flat_params[name] = jax.device_put(
          np.asarray(value, flat_params[name].dtype), flat_shardings[name])
    params = partition.unflat(flat_params)
  # Float parameters are reused in place; quantized kernels cannot reuse their float buffers.
  donate = (0,) if _quantization(cfg)[0] == "none" else ()
  from llm_jax.compress import distill  # pylint: disable=g-import-not-at-top
  teacher = distill.teacher_params(cfg) if distill.enabled(cfg) else None
  state = jax.jit(lambda p, t: state_from_params(p, layout.trainable_names, t),
                  out_shardings=layout.shardings, donate_argnums=donate)(params, teacher)
  return state, layout.shardings


def _check_batch(batch, batch_size, where):
  for field in ("targets", "loss_weights"):
    if field not in batch:
      raise ValueError(f"{where}: batch has no {field!r} field (fields: {sorted(batch)})")
  for field, value in batch.items():
    if np.shape(value)[0] != batch_size:
      raise ValueError(
          f"{where}: batch field {field!r} has leading size {np.shape(value)[0]}, expected the "
          f"GLOBAL batch size {batch_size} (config.train.batch_size)")


def _jit_per_batch_signature(make_jitted, mesh, rules) -> Callable:
  """Calls make_jitted(batch, batch_shardings) once per batch layout and runs the result in
  the mesh context."""
  compiled = {}

  def jitted_for(batch):
    signature = tuple(sorted((k, np.shape(v)) for k, v in batch.items()))
    if signature not in compiled:
      batch_shardings = {k: sharding.batch_sharding(mesh, rules, np.ndim(v))
                         for k, v in batch.items()}
      compiled[signature] = make_jitted(batch, batch_shardings)
    return compiled[signature]

  def call(first, batch, *rest):
    with sharding.mesh_context(mesh, rules):
      return jitted_for(batch)(first, batch, *rest)

  def lower(first, batch, *rest):
    """jax.stages.Lowered for these arguments: `.compile()` it ahead of time or read its HLO."""
    with sharding.mesh_context(mesh, rules):
      return jitted_for(batch).lower(first, batch, *rest)

  call.lower = lower
  return call


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Everything the step body needs, resolved once per run (and per batch layout: slices)."""
  model: nn.Module
  task: tasks.Task
  tx: optax.GradientTransformation
  schedule: Callable
  fields: tuple[str, ...]
  batch_size: int
  slices: int = 1  # gradient accumulation over this many slices of the batch
  nan_at_step: int = -1
  reference_in_step: bool = False  # run the frozen reference policy (outputs['reference'])
  mesh: Mesh | None = None
  rules: Any = None
  teacher_model: nn.Module | None = None  # distillation: its outputs are outputs['teacher']
  params_transform: Callable | None = None  # e.g. QAT's fake quantization of the kernels


def apply_model(opts: StepOptions, params, frozen, batch, rng=None):
  """The model's outputs for `batch`; dropout on when an rng is given. Quantized frozen
  kernels go to the model as they are: each dense layer dequantizes its own."""
  variables = {"params": partition.merge(params, model_frozen(frozen))}
  if opts.params_transform is not None:
    variables = {"params": opts.params_transform(variables["params"])}
  inputs = {k: batch[k] for k in opts.fields if k in batch}
  mutable = [moe.AUX_COLLECTION]  # MoE layers sow their auxiliary losses there
  if rng is None:
    outputs, aux = opts.model.apply(variables, **inputs, deterministic=True, mutable=mutable)
  else:
    outputs, aux = opts.model.apply(variables, **inputs, deterministic=False,
                                    rngs={"dropout": rng}, mutable=mutable)
  return {**outputs, **moe.aux_outputs(aux, opts.model.cfg.get("moe"))}


def reference_outputs(opts: StepOptions, params, frozen, batch):
  """The frozen reference policy's outputs (no dropout, no gradient): the stored copy, or the
  model with its LoRA factors zeroed."""
  if REFERENCE in frozen:
    outputs = apply_model(opts, {}, frozen[REFERENCE], batch)
  else:
    outputs = apply_model(opts, jax.tree.map(jnp.zeros_like, params), frozen, batch)
  return jax.lax.stop_gradient(outputs)


def task_outputs(opts: StepOptions, params, frozen, batch, rng=None):
  """The model's outputs, with the reference policy's under 'reference' when the task uses it."""
  outputs = apply_model(opts, params, frozen, batch, rng)
  if opts.reference_in_step:
    outputs = {**outputs, "reference": reference_outputs(opts, params, frozen, batch)}
  if opts.teacher_model is not None:
    inputs = {k: batch[k] for k in opts.fields if k in batch}
    teacher = opts.teacher_model.apply({"params": frozen[TEACHER]}, **inputs, deterministic=True)
    outputs = {**outputs, "teacher": jax.lax.stop_gradient(teacher)}
  return outputs


def loss_fn(params, frozen, batch, rng, totals, scale, *, opts: StepOptions):
  """(loss, metric sums) of the task on `batch`; only `params` is differentiated."""
  outputs = task_outputs(opts, params, frozen, batch, rng)
  loss, sums = opts.task.loss(outputs, batch, totals)
  if "moe_aux_loss" in outputs:  # weighted by this slice's share of the batch
    share = np.shape(batch["targets"])[0] / opts.batch_size
    loss = loss + share * outputs["moe_aux_loss"]
    sums = {**sums, **{k: share * v for k, v in outputs.items() if k.startswith("moe_")}}
  return loss * scale, sums


def _slice_batch(x, slices, batch_size):
  """[B, ...] -> [slices, B/slices, ...]; rows j, j+m, j+2m... form slice j, so each device
  keeps its rows."""
  x = x.reshape(batch_size // slices, slices, *x.shape[1:])
  return jnp.swapaxes(x, 0, 1)


def _grads_and_sums(state, batch, rng, totals, scale, opts: StepOptions):
  grad_fn = jax.grad(functools.partial(loss_fn, opts=opts), has_aux=True)
  if opts.slices == 1:
    return grad_fn(state.params, state.frozen, batch, rng, totals, scale)

  def accumulate(carry, index_and_slice):
    index, batch_slice = index_and_slice
    batch_slice = {k: jax.lax.with_sharding_constraint(
        v, sharding.batch_sharding(opts.mesh, opts.rules, v.ndim)) for k, v in batch_slice.items()}
    grads, sums = grad_fn(state.params, state.frozen, batch_slice, jax.random.fold_in(rng, index),
                          totals, scale)
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  first = jax.tree.map(lambda x: x[:opts.batch_size // opts.slices], batch)
  _, sums_shape = jax.eval_shape(grad_fn, state.params, state.frozen, first, rng, totals, scale)
  zeros = jax.tree.map(jnp.zeros_like, (state.params, sums_shape))
  sliced = jax.tree.map(lambda x: _slice_batch(x, opts.slices, opts.batch_size), batch)
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(opts.slices), sliced))
  return grads, sums


def train_step(state: TrainState, batch, rng, opts: StepOptions):
  """One optimizer step of the task's loss on the GLOBAL batch -> (new state, metrics)."""
  rng = jax.random.fold_in(rng, state.step)
  totals = opts.task.totals(batch)
  scale = jnp.float32(1.0)
  if opts.nan_at_step >= 0:
    # nan_at_step counts from 1, as the loop and metrics.jsonl number steps.
    scale = jnp.where(state.step + 1 == opts.nan_at_step, jnp.float32(jnp.nan), scale)
  grads, sums = _grads_and_sums(state, batch, rng, totals, scale, opts)
  updates, opt_state = opts.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                            params=optax.apply_updates(state.params, updates))
  weight = jnp.maximum(sums["weight_sum"], 1e-9)
  metrics = dict(
      loss=sums["loss_sum"] * scale / weight,
      z_loss=sums["z_loss_sum"] / weight,
      grad_norm=optax.global_norm(grads),
      update_norm=optax.global_norm(updates),  # the loop refuses to save a non-finite one
      learning_rate=opts.schedule(state.step),
      tokens=sums["weight_sum"],
      accuracy=sums["correct_sum"] / weight,
  )
  if "nsp_loss_sum" in sums:
    nsp_rows = jnp.maximum(sums["nsp_weight_sum"], 1e-9)
    metrics.update(nsp_loss=sums["nsp_loss_sum"] / nsp_rows,
                   nsp_accuracy=sums["nsp_correct_sum"] / nsp_rows)
  if hasattr(opts.task, "step_metrics"):
    metrics.update(opts.task.step_metrics(sums))
  metrics.update({k: v for k, v in sums.items() if k.startswith("moe_")})
  return new_state, metrics


def step_options(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh) -> StepOptions:
  """The run's StepOptions; checks microbatching against the batch and the mesh."""
  rules = sharding.rules_from_config(cfg)
  sharding.validate_rules(rules, mesh)
  microbatches = int(cfg.optimizer.microbatches)
  batch_size = int(cfg.train.batch_size)
  shards = sharding.batch_shard_count(mesh, rules)
  if microbatches < 1 or batch_size % microbatches:
    raise ValueError(
        f"optimizer.microbatches={microbatches} must be >= 1 and divide "
        f"train.batch_size={batch_size}")
  if (batch_size // microbatches) % shards:
    raise ValueError(
        f"train.batch_size={batch_size} / optimizer.microbatches={microbatches} = "
        f"{batch_size // microbatches} is not divisible by the {shards} batch shards of mesh "
        f"{dict(mesh.shape)}")
  nan_at_step = cfg.train.get("nan_at_step")
  # pylint: disable=g-import-not-at-top
  from llm_jax.compress import distill
  from llm_jax.compress import qat
  # pylint: enable=g-import-not-at-top
  return StepOptions(
      model=model, task=tasks.make_task(cfg), tx=_make_optimizer(cfg),
      schedule=optimizer_lib.make_schedule(cfg.optimizer, cfg.train.steps),
      fields=model_input_fields(cfg.model.family), batch_size=batch_size, slices=microbatches,
      nan_at_step=-1 if nan_at_step is None else int(nan_at_step),
      reference_in_step=_reference_in_step(cfg), mesh=mesh, rules=rules,
      teacher_model=distill.teacher_model(cfg) if distill.enabled(cfg) else None,
      params_transform=qat.params_transform(cfg))


def make_train_step(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh,
                    state_shardings: TrainState, layout: StateLayout | None = None) -> Callable:
  """train_step(state, batch, rng) -> (state, metrics), jitted once per batch layout with the
  state's shardings; `state` is donated. `.lower(state, batch, rng)` gives the Lowered step.

  With optimizer.microbatches = m > 1 the gradient is accumulated over m slices of the batch
  and equals the full-batch gradient. With m = 1 on CPU, a batch whose activations outgrow the
  cache is sliced the same way (`cpu_batch_slices`), decided here, outside the step body.
  """
  opts = step_options(cfg, model, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  on_cpu = mesh.devices.flat[0].platform == "cpu"

  param_bytes = _state_param_bytes(layout or state_layout(cfg, model, mesh)) if on_cpu else 0

  def make_jitted(batch, batch_shardings):
    step_opts = opts
    if opts.slices == 1 and on_cpu:
      step_opts = dataclasses.replace(opts, slices=cpu_batch_slices(
          cfg.model, batch, param_bytes, sharding.batch_shard_count(mesh, opts.rules)))
    return jax.jit(
        lambda state, batch, rng: train_step(state, batch, rng, step_opts),
        in_shardings=(state_shardings, batch_shardings, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,))

  jitted = _jit_per_batch_signature(make_jitted, mesh, opts.rules)

  def run_train_step(state, batch, rng):
    _check_batch(batch, opts.batch_size, "train_step")
    return jitted(state, batch, rng)

  run_train_step.lower = jitted.lower
  return run_train_step


def _state_param_bytes(layout: StateLayout) -> int:
  """Bytes of the model's parameters (all of them: each batch slice re-reads every weight)."""
  abstract = layout.abstract_state
  leaves = jax.tree.leaves((abstract.params, abstract.frozen))
  return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves))


def eval_step_fn(params, frozen, batch, opts: StepOptions):
  """The task's eval sums (and per-example predictions, for classification) without dropout."""
  return opts.task.eval_sums(task_outputs(opts, params, frozen, batch), batch)


def make_eval_step(cfg: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh,
                   state_shardings: TrainState) -> Callable:
  """eval_step(params, batch, frozen=None) -> dict of sums (loss_sum, weight_sum, correct_sum)
  over the GLOBAL batch, plus per-example predictions/targets/weights for classification and
  regression. Divide the summed sums to get means over many batches."""
  opts = step_options(cfg, model, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())

  def make_jitted(batch, batch_shardings):
    del batch
    return jax.jit(
        lambda params, batch, frozen: eval_step_fn(params, frozen, batch, opts),
        in_shardings=(state_shardings.params, batch_shardings, state_shardings.frozen),
        out_shardings=replicated)

  jitted = _jit_per_batch_signature(make_jitted, mesh, opts.rules)

  def eval_step(params, batch, frozen=None):
    for field in ("targets", "loss_weights"):
      if field not in batch:
        raise ValueError(f"eval_step: batch has no {field!r} field (fields: {sorted(batch)})")
    return jitted(params, batch, {} if frozen is None else frozen)

  return eval_step
