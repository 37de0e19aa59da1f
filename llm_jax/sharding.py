"""Device mesh from config, logical-axis rules, and the shardings of state and batches.

The rule table maps logical axis names (on parameters and activations) to mesh axes. Rules are
read in order: a dimension takes the first rule for its name whose mesh axes are still unused
by the other dimensions of the same array (flax's semantics). Unlike flax, every parameter is
checked before any work: an unknown logical name, an unknown mesh axis, a dimension that
cannot be placed, or one that does not divide its mesh axes raises a ValueError.
"""

from collections.abc import Iterator, Mapping, Sequence
import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np

MESH_AXES = ("data", "fsdp", "expert", "tensor")

Rules = tuple[tuple[str, Any], ...]


def default_mesh_config() -> ml_collections.ConfigDict:
  """Mesh shape; -1 takes the devices the other axes leave."""
  return ml_collections.ConfigDict(dict(data=-1, fsdp=1, expert=1, tensor=1))


def default_sharding_rules() -> Rules:
  """Logical axis -> mesh axes: batch over data x fsdp (x expert), weights over fsdp and tensor,
  MoE experts over expert.

  'expert' comes before 'batch': the tokens dispatched to experts [expert, batch, ...] keep
  their experts on the expert axis and their batch rows on data x fsdp (the fallback rule), so
  moving tokens from [batch, ...] to [expert, batch, ...] is an all-to-all over the expert axis.
  """
  return (
      ("expert", "expert"),
      ("batch", ("data", "fsdp", "expert")),
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("vocab", "tensor"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("mlp", "tensor"),
      ("length", None),
      ("head_dim", None),
      ("layers", None),
      ("relpos_buckets", None),
  )


def rules_from_config(cfg: ml_collections.ConfigDict) -> Rules:
  """The experiment's `sharding.rules`, or the defaults when the config has no such section."""
  sharding_cfg = cfg.get("sharding")
  if sharding_cfg is None or sharding_cfg.get("rules") is None:
    return default_sharding_rules()
  return normalize_rules(sharding_cfg.rules)


def normalize_rules(rules: Sequence[Sequence[Any]]) -> Rules:
  """Pairs of (logical name, mesh axis | tuple of mesh axes | None); lists become tuples."""
  normalized = []
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(
          f"sharding rule {rule!r}: expected a pair (logical_name, mesh_axes)")
    name, axes = rule
    if isinstance(axes, (list, tuple)):
      axes = tuple(axes)
    elif axes is not None and not isinstance(axes, str):
      raise ValueError(
          f"sharding rule for {name!r}: mesh axes must be a name, a tuple of names or None, "
          f"got {axes!r}")
    normalized.append((name, axes))
  return tuple(normalized)


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves the config's axis sizes (one of them may be -1) against the device count."""
  unknown = sorted(set(mesh_cfg.keys()) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh config: unknown axes {unknown}; the mesh axes are {MESH_AXES}")
  sizes = [int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES]
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"mesh.{axis}={size}: sizes must be positive or -1")
  wildcards = [axis for axis, size in zip(MESH_AXES, sizes) if size == -1]
  if len(wildcards) > 1:
    raise ValueError(f"mesh: only one axis may be -1, got -1 for {wildcards}")
  fixed = math.prod(size for size in sizes if size != -1)
  if wildcards:
    if num_devices % fixed:
      raise ValueError(
          f"mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes (product {fixed}) do not "
          f"divide the {num_devices} devices")
    sizes[MESH_AXES.index(wildcards[0])] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))}: product {fixed} != {num_devices} devices")
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'expert', 'tensor') mesh with Auto axis types over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(
      shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
      devices=devices)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Mesh and logical rules in scope, so the model's activation constraints apply when traced."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(normalize_rules(rules)):
    yield


def validate_rules(rules: Rules, mesh: Mesh) -> None:
  """Every mesh axis named by a rule exists in the mesh."""
  for name, axes in normalize_rules(rules):
    for axis in _as_tuple(axes):
      if axis not in mesh.axis_names:
        raise ValueError(
            f"sharding rule ({name!r}, {axes!r}) names mesh axis {axis!r}, "
            f"which is not one of the mesh axes {tuple(mesh.axis_names)}")


def logical_to_mesh_axes(
    logical_names: Sequence[str | None], rules: Rules, where: str = "array"
) -> PartitionSpec:
  """The mesh PartitionSpec of one array from its logical dimension names.

  Raises ValueError for a logical name without any rule, or one whose every rule names mesh
  axes already used by another dimension of the same array.
  """
  rules = normalize_rules(rules)
  known = {name for name, _ in rules}
  for name in logical_names:
    if name is not None and name not in known:
      raise ValueError(
          f"{where}: logical axis {name!r} has no sharding rule; add ({name!r}, mesh_axes) "
          f"or ({name!r}, None) to sharding.rules")
  assigned: list[Any] = [None] * len(logical_names)
  placed = [name is None for name in logical_names]
  used: set[str] = set()
  for rule_name, axes in rules:
    for dim, name in enumerate(logical_names):
      if name != rule_name or placed[dim]:
        continue
      if used.isdisjoint(_as_tuple(axes)):
        assigned[dim] = axes
        placed[dim] = True
        used.update(_as_tuple(axes))
  for dim, name in enumerate(logical_names):
    if not placed[dim]:
      raise ValueError(
          f"{where}: logical axis {name!r} (dimension {dim}) cannot be placed: every rule for it "
          f"names mesh axes already used by another dimension ({sorted(used)})")
  return PartitionSpec(*assigned)


def logical_to_mesh_sharding(
    logical_specs_tree: Any, mesh: Mesh, rules: Rules, shapes_tree: Any = None
) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings, validated.

  With `shapes_tree` (same structure; arrays or ShapeDtypeStructs) each dimension is also
  checked to divide the product of the mesh axes it is sharded over.
  """
  validate_rules(rules, mesh)
  is_spec = lambda x: isinstance(x, PartitionSpec)
  paths_and_specs, treedef = jax.tree_util.tree_flatten_with_path(
      logical_specs_tree, is_leaf=is_spec)
  shapes = [None] * len(paths_and_specs)
  if shapes_tree is not None:
    shapes = [np.shape(x) for x in treedef.flatten_up_to(shapes_tree)]
  shardings = []
  for (path, logical_spec), shape in zip(paths_and_specs, shapes):
    where = f"parameter {jax.tree_util.keystr(path)}"
    mesh_spec = logical_to_mesh_axes(tuple(logical_spec), rules, where)
    if shape is not None:
      _check_divisible(where, shape, tuple(logical_spec), mesh_spec, mesh)
    shardings.append(NamedSharding(mesh, mesh_spec))
  return jax.tree_util.tree_unflatten(treedef, shardings)


def _check_divisible(where, shape, logical_spec, mesh_spec, mesh):
  if len(logical_spec) != len(shape):
    raise ValueError(
        f"{where}: {len(logical_spec)} logical axes {logical_spec} for shape {shape}")
  for dim, (size, name, axes) in enumerate(zip(shape, logical_spec, mesh_spec)):
    shards = math.prod(mesh.shape[axis] for axis in _as_tuple(axes))
    if size % shards:
      field = " (model.moe.num_experts)" if name == "expert" else ""
      raise ValueError(
          f"{where}: dimension {dim} (logical axis {name!r}, size {size}{field}) is not "
          f"divisible by mesh axes {axes!r} of total size {shards}")


def batch_axes(rules: Rules) -> Any:
  """Mesh axes of the logical 'batch' dimension."""
  return logical_to_mesh_axes(("batch",), rules, "batch")[0]


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [batch, length] array ([batch] for ndim=1)."""
  names = ("batch", "length")[:ndim] + (None,) * max(ndim - 2, 0)
  return NamedSharding(mesh, logical_to_mesh_axes(names, rules, "batch"))


def batch_shard_count(mesh: Mesh, rules: Rules) -> int:
  """How many ways the batch dimension is split over the mesh."""
  return math.prod(mesh.shape[axis] for axis in _as_tuple(batch_axes(rules)))


def make_global_batch(local_np_batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict:
  """This process's share of the batch -> global jax.Arrays sharded over the batch axes.

  The global batch size is the local one times the process count.
  """
  validate_rules(rules, mesh)
  global_batch = {}
  for key, value in local_np_batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f"batch field {key!r} is a scalar; expected a [batch, ...] array")
    shards = batch_shard_count(mesh, rules)
    if (value.shape[0] * jax.process_count()) % shards:
      raise ValueError(
          f"batch field {key!r}: global batch size {value.shape[0] * jax.process_count()} "
          f"is not divisible by the {shards} batch shards of mesh {dict(mesh.shape)}")
    sharding = batch_sharding(mesh, rules, value.ndim)
    global_batch[key] = jax.make_array_from_process_local_data(sharding, value)
  return global_batch


def _as_tuple(axes: Any) -> tuple[str, ...]:
  if axes is None:
    return ()
  return tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)
