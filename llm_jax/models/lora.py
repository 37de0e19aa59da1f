"""LoRA and (IA)^3 in dense layers: which layers they apply to, and their initialisers.

A dense layer's path is its linen scope path below the model, '/'-joined: the same as its
parameter path, e.g. 'decoder/layers_0/self_attention/query', or with scan_layers
'decoder/layers/self_attention/query' (nn.remat adds nothing). Targets are re.search-ed in it.
"""

import functools
import math
import re

import flax.linen as nn

LORA_PARAMS = ("lora_a", "lora_b")
IA3_PARAM = "ia3_scale"


@functools.lru_cache(maxsize=None)
def _compile(field: str, regex: str) -> re.Pattern:
  try:
    return re.compile(regex)
  except re.error as e:
    raise ValueError(f"model.peft.{field}={regex!r} is not a valid regex: {e}") from e


def matches(field: str, regex: str, path: str) -> bool:
  return bool(regex) and _compile(field, regex).search(path) is not None


def layer_path(module: nn.Module) -> str:
  return "/".join(module.scope.path)


def lora_applies(peft, path: str) -> bool:
  return peft is not None and peft.lora_rank > 0 and matches("lora_targets", peft.lora_targets,
                                                             path)


def ia3_mode(peft, path: str) -> str | None:
  """None (no (IA)^3), 'input' (ia3_feedforward: scales the inputs) or 'output'."""
  if peft is None or not matches("ia3_targets", peft.ia3_targets, path):
    return None
  return "input" if matches("ia3_feedforward", peft.ia3_feedforward, path) else "output"


def check_rank(rank: int, path: str, in_shape, out_shape) -> None:
  fan_in, fan_out = math.prod(in_shape), math.prod(out_shape)
  if rank > min(fan_in, fan_out):
    raise ValueError(
        f"model.peft.lora_rank={rank} is larger than dense layer {path!r}: in={fan_in} "
        f"{tuple(in_shape)}, out={fan_out} {tuple(out_shape)}; lower lora_rank or leave the "
        f"layer out of model.peft.lora_targets")


def lora_a_init(num_contracted: int):
  """Hugging Face peft's kaiming_uniform_(a=sqrt(5)) of lora_A: U(-1/sqrt(fan_in), +)."""
  return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform",
                                          in_axis=tuple(range(num_contracted)), out_axis=-1)
