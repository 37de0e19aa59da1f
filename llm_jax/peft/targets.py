"""Which dense layers the peft target regexes pick, with errors for regexes that pick none."""

import math

import flax.linen as nn

from llm_jax.models import lora


def dense_layer_paths(params) -> list[str]:
  """Paths of the dense layers (subtrees holding a 'kernel') of a params tree, sorted."""
  paths = []

  def visit(node, path):
    if not isinstance(node, dict):
      return
    if "kernel" in node and not isinstance(node["kernel"], dict):
      paths.append("/".join(path))
    for key, value in node.items():
      visit(value, path + (key,))

  visit(dict(params), ())
  return sorted(paths)


def _shape(x) -> tuple[int, ...]:
  return tuple((x.value if isinstance(x, nn.Partitioned) else x).shape)


def _node(params, path: str) -> dict:
  for key in path.split("/") if path else ():
    params = params[key]
  return params


def check_targets(model_cfg, params=None) -> dict[str, list[str]]:
  """Raises a ValueError naming the regex when lora_targets (with lora_rank > 0) or ia3_targets
  matches no dense layer of the model, listing the dense layer paths; and one naming the layer
  when a LoRA rank exceeds a layer's width. Returns {'lora': paths, 'ia3': paths}.

  `params`: the model's params (any tree whose dense layers hold 'kernel'; base params without
  adapter leaves will do); None: the abstract params of build_model(model_cfg).
  """
  peft = model_cfg.peft
  if params is None:
    from llm_jax import models  # pylint: disable=g-import-not-at-top
    params = models.abstract_params(models.build_model(model_cfg), model_cfg)
  paths = dense_layer_paths(params)
  chosen = {"lora": [], "ia3": []}
  checks = []
  if peft.lora_rank > 0:
    checks.append(("lora", "lora_targets", peft.lora_targets))
  if peft.ia3_targets:
    checks.append(("ia3", "ia3_targets", peft.ia3_targets))
  for method, field, regex in checks:
    chosen[method] = [p for p in paths if lora.matches(field, regex, p)]
    if not chosen[method]:
      raise ValueError(f"model.peft.{field}={regex!r} matches no dense layer of the model; its "
                       f"dense layers are: {', '.join(paths)}")
  for path in chosen["lora"]:
    node = _node(params, path)
    if "lora_a" in node and "lora_b" in node:  # their shapes tell the contracted dims
      a, b = _shape(node["lora_a"]), _shape(node["lora_b"])
      stacked = len(a) + len(b) - 2 - len(_shape(node["kernel"]))  # scan_layers: 1
      fan_in, fan_out = math.prod(a[stacked:-1]), math.prod(b[stacked + 1:])
      if peft.lora_rank > min(fan_in, fan_out):
        raise ValueError(f"model.peft.lora_rank={peft.lora_rank} is larger than dense layer "
                         f"{path!r}: in={fan_in}, out={fan_out}")
  return chosen
