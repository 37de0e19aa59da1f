"""Hugging Face `peft` adapters -> model.peft settings and adapter parameters.

A peft folder (adapter_config.json + adapter_model.safetensors, as peft's save_pretrained
writes it) of a model converted with llm_jax.convert.from_hf. LoRA and (IA)^3 for GPT-2, LLaMA,
BERT / RoBERTa and T5; prefix tuning, P-tuning and prompt tuning go to hf_peft_prompts.

peft stores lora_A [rank, in] and lora_B [out, rank] (nn.Linear weights, also for GPT-2's
Conv1D layers) and ia3_l [out, 1], or [1, in] for feed-forward modules. GPT-2's fused c_attn
has one lora_A for query, key and value (each of ours gets a copy) and lora_B / ia3_l split
along `out`. The target regexes are built from the layers the file holds tensors for: the
layer names without the layer index (e.g. '(^|/)(?:self_attention/query|mlp/wo)$') when
that picks the same layers, else their full paths.
"""

import copy
import json
import math
import os
import re

import ml_collections
import numpy as np
from flax import traverse_util

from llm_jax.convert import common
from llm_jax.convert.common import ConversionError
from llm_jax.peft import targets as targets_lib

LORA_TYPES = ("LORA", "IA3")
PROMPT_TYPES = ("PREFIX_TUNING", "P_TUNING", "PROMPT_TUNING")
_CONFIG_FILE = "adapter_config.json"
_PREFIX = "base_model.model."


def _model_type(cfg) -> str:
  return cfg.get("hf_model_type") or {
      "decoder": "llama" if cfg.position == "rope" else "gpt2",
      "encoder": "bert",
      "encoder_decoder": "t5",
  }[cfg.family]


def _module_table(cfg) -> dict[str, list[tuple[str, int, int]]]:
  """Hugging Face module name -> [(our dense layer path, part, parts)] (parts > 1: fused)."""
  rows: dict[str, list[tuple[str, int, int]]] = {}

  def add(hf_names, ours, part=0, parts=1):
    for name in hf_names:
      rows.setdefault(name, []).append((ours, part, parts))

  model_type = _model_type(cfg)
  if model_type == "llama":
    for i in range(cfg.num_layers):
      ours = f"decoder/layers_{i}"
      for theirs, our in (("self_attn.q_proj", "self_attention/query"),
                          ("self_attn.k_proj", "self_attention/key"),
                          ("self_attn.v_proj", "self_attention/value"),
                          ("self_attn.o_proj", "self_attention/out"),
                          ("mlp.gate_proj", "mlp/wi_0"), ("mlp.up_proj", "mlp/wi_1"),
                          ("mlp.down_proj", "mlp/wo")):
        add([f"model.layers.{i}.{theirs}", f"layers.{i}.{theirs}"], f"{ours}/{our}")
    add(["lm_head"], "head/lm_head")
  elif model_type == "gpt2":
    for i in range(cfg.num_layers):
      ours = f"decoder/layers_{i}"
      names = lambda t, i=i: [f"transformer.h.{i}.{t}", f"h.{i}.{t}"]
      for part, our in enumerate(("query", "key", "value")):
        add(names("attn.c_attn"), f"{ours}/self_attention/{our}", part, 3)
      add(names("attn.c_proj"), f"{ours}/self_attention/out")
      add(names("mlp.c_fc"), f"{ours}/mlp/wi")
      add(names("mlp.c_proj"), f"{ours}/mlp/wo")
    add(["lm_head"], "head/lm_head")
  elif model_type in ("bert", "roberta"):
    base = f"{model_type}."
    for i in range(cfg.num_layers):
      ours = f"encoder/layers_{i}"
      for theirs, our in (("attention.self.query", "self_attention/query"),
                          ("attention.self.key", "self_attention/key"),
                          ("attention.self.value", "self_attention/value"),
                          ("attention.output.dense", "self_attention/out"),
                          ("intermediate.dense", "mlp/wi"), ("output.dense", "mlp/wo")):
        name = f"encoder.layer.{i}.{theirs}"
        add([base + name, name], f"{ours}/{our}")
    add([base + "pooler.dense", "pooler.dense", "classifier.dense"], "pooler")
    add(["cls.predictions.transform.dense", "lm_head.dense"], "mlm_head/transform")
    add(["cls.predictions.decoder", "lm_head.decoder"], "mlm_head/decoder")
    add(["cls.seq_relationship"], "nsp_head")
    add(["classifier", "classifier.out_proj"], "classifier")
  elif model_type == "t5":
    for stack, num_layers in (("encoder", cfg.num_layers),
                              ("decoder", cfg.num_decoder_layers or cfg.num_layers)):
      blocks = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
      for i in range(num_layers):
        hf, ours = f"{stack}.block.{i}.layer.", f"{stack}/layers_{i}"
        for j, block in enumerate(blocks):
          our_block = "self_attention" if block == "SelfAttention" else "cross_attention"
          for t, our in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
            add([f"{hf}{j}.{block}.{t}"], f"{ours}/{our_block}/{our}")
        for t in ("wi", "wi_0", "wi_1", "wo"):
          add([f"{hf}{len(blocks)}.DenseReluDense.{t}"], f"{ours}/mlp/{t}")
    add(["lm_head"], "head/lm_head")
  else:
    raise ConversionError(f"Hugging Face peft LoRA / IA3 adapters are supported for gpt2, "
                          f"llama, bert, roberta and t5 models; this one is {model_type!r}")
  return rows


def _read_folder(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
  config_path = os.path.join(folder, _CONFIG_FILE)
  if not os.path.exists(config_path):
    raise ConversionError(f"peft adapter folder {folder!r} has no {_CONFIG_FILE}")
  with open(config_path) as f:
    config = json.load(f)
  weights = os.path.join(folder, "adapter_model.safetensors")
  torch_bin = os.path.join(folder, "adapter_model.bin")
  if os.path.exists(weights):
    tensors = common.read_safetensors(weights)
  elif os.path.exists(torch_bin):
    tensors = common._read_torch_bin(torch_bin)  # pylint: disable=protected-access
  else:
    raise ConversionError(f"peft adapter folder {folder!r} has no adapter_model.safetensors "
                          f"or adapter_model.bin")
  return config, {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def _suffix(path: str) -> str:
  """A layer path without its stack and layer index: 'self_attention/query', or the whole
  path for layers outside the stacks ('head/lm_head')."""
  m = re.match(r"^.*?/layers_\d+/(.*)$", path)
  return m.group(1) if m else path


def _regex_for(chosen: set[str], candidates: list[str]) -> str:
  """A regex that re.search-es exactly the `chosen` ones of `candidates`."""
  if not chosen:
    return ""
  generic = "(^|/)(?:" + "|".join(re.escape(s) for s in sorted({_suffix(p) for p in chosen})) + ")$"
  if {p for p in candidates if re.search(generic, p)} == chosen:
    return generic
  return "^(?:" + "|".join(re.escape(p) for p in sorted(chosen)) + ")$"


def _unsupported(config: dict, peft_type: str) -> None:
  checks = [("modules_to_save", lambda v: not v), ("use_dora", lambda v: not v),
            ("lora_bias", lambda v: not v), ("bias", lambda v: v in (None, "none")),
            ("rank_pattern", lambda v: not v), ("alpha_pattern", lambda v: not v)]
  for field, ok in checks:
    if field in config and not ok(config[field]):
      raise ConversionError(f"peft {peft_type} adapter_config.json {field}={config[field]!r} is "
                            f"not supported")


def _is_feedforward(config: dict, module: str) -> bool:
  """peft's IA3 rule: a regex string fullmatches, a list entry matches a name's end."""
  ff = config.get("feedforward_modules") or []
  if isinstance(ff, str):
    return re.fullmatch(ff, module) is not None
  return any(module.endswith(t) for t in ff)


def _split(name: str, kinds: tuple[str, ...]) -> tuple[str, str]:
  """'base_model.model.X.lora_A.weight' -> ('X', 'lora_A.weight')."""
  body = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
  for kind in kinds:
    if body.endswith("." + kind):
      return body[: -len(kind) - 1], kind
  raise ConversionError(f"peft tensor {name!r} is not one of {kinds} (LoRA on embeddings, "
                        f"DoRA and modules_to_save are not supported)")


def _convert_lora_ia3(folder, config, tensors, model_cfg, params):
  peft_type = config["peft_type"]
  _unsupported(config, peft_type)
  table = _module_table(model_cfg)
  base_paths = targets_lib.dense_layer_paths(common.unstack_layers(dict(params)))
  kinds = ("lora_A.weight", "lora_B.weight") if peft_type == "LORA" else ("ia3_l",)
  # our layer path -> {'lora_A.weight': (array, part, parts), ...}
  found: dict[str, dict[str, tuple[np.ndarray, int, int]]] = {}
  feedforward: set[str] = set()
  base_copies: dict[str, tuple[str, np.ndarray]] = {}  # peft saves these for output embeddings
  for name, array in tensors.items():
    module, kind = _split(name, kinds + ("base_layer.weight",))
    if kind == "base_layer.weight":
      base_copies[module] = (name, array)
      continue
    layers = [row for row in table.get(module, []) if row[0] in base_paths]
    if not layers:
      raise ConversionError(f"{folder}: peft tensor {name!r} is for module {module!r}, which "
                            f"has no dense layer in this {_model_type(model_cfg)} model")
    for ours, part, parts in layers:
      found.setdefault(ours, {})[kind] = (array, part, parts)
      if peft_type == "IA3" and _is_feedforward(config, module):
        feedforward.add(ours)
  chosen = set(found)
  for ours, entry in found.items():
    for kind in kinds:
      if kind not in entry:
        raise ConversionError(f"{folder}: the adapter of {ours!r} has no {kind} tensor")

  cfg = (model_cfg.as_configdict() if isinstance(model_cfg, ml_collections.FrozenConfigDict)
         else copy.deepcopy(model_cfg))
  regex = _regex_for(chosen, base_paths)
  if peft_type == "LORA":
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", 8))
    if config.get("use_rslora"):  # scaling alpha / sqrt(r) = (alpha * sqrt(r)) / r
      alpha *= math.sqrt(rank)
    cfg.peft.lora_rank = rank
    cfg.peft.lora_alpha = alpha
    cfg.peft.lora_dropout = float(config.get("lora_dropout", 0.0))
    cfg.peft.lora_targets = regex
  else:
    cfg.peft.ia3_targets = regex
    cfg.peft.ia3_feedforward = _regex_for(feedforward, sorted(chosen))
  if cfg.scan_layers and regex.startswith("^"):
    raise ConversionError(f"{folder}: the adapter covers only some layers ({sorted(chosen)}); "
                          f"a scan_layers model needs it on every layer: convert without "
                          f"scan_layers")

  from llm_jax import models  # pylint: disable=g-import-not-at-top
  unrolled = copy.deepcopy(cfg)
  unrolled.scan_layers = False
  abstract = models.abstract_params(models.build_model(unrolled), unrolled)
  new = {}
  for ours in sorted(chosen):
    node = abstract
    for key in ours.split("/"):
      node = node[key]
    entry = found[ours]
    if peft_type == "LORA":
      a_hf, _, _ = entry["lora_A.weight"]
      b_hf, part, parts = entry["lora_B.weight"]
      b_hf = np.split(b_hf, parts, axis=0)[part]
      values = {"lora_a": a_hf.T, "lora_b": b_hf.T}
    else:
      l_hf, part, parts = entry["ia3_l"]
      if ours not in feedforward:  # [out, 1], split along out when fused
        l_hf = np.split(l_hf.reshape(-1), parts)[part]
      values = {"ia3_scale": l_hf.reshape(-1)}
    for leaf, value in values.items():
      if leaf not in node:
        raise ConversionError(f"{folder}: model layer {ours!r} has no {leaf} parameter")
      shape = tuple(node[leaf].shape)
      if value.size != math.prod(shape):
        raise ConversionError(f"{folder}: the peft {peft_type} tensor of {ours!r} has "
                              f"{value.shape} values, our {leaf} has shape {shape}")
      new[tuple(ours.split("/")) + (leaf,)] = np.ascontiguousarray(value.reshape(shape))
  replaced = ("lora_a", "lora_b") if peft_type == "LORA" else ("ia3_scale",)
  flat = {k: v for k, v in traverse_util.flatten_dict(common.unstack_layers(dict(params))).items()
          if k[-1] not in replaced or k in new}  # the other method's leaves stay
  for module, (name, weight) in base_copies.items():
    rows = [row for row in table.get(module, []) if row[0] in chosen]
    if len(rows) != 1:
      raise ConversionError(f"{folder}: peft tensor {name!r} has no adapted layer of ours")
    kernel = np.asarray(flat[tuple(rows[0][0].split("/")) + ("kernel",)], np.float32)
    if weight.size != kernel.size or not any(
        np.allclose(weight, k, atol=1e-6) for k in (kernel.reshape(weight.shape[::-1]).T,
                                                    kernel.reshape(weight.shape))):
      raise ConversionError(f"{folder}: peft tensor {name!r} differs from the base model's "
                            f"{rows[0][0]}/kernel (the adapter is for other base weights)")
  flat.update(new)
  out = traverse_util.unflatten_dict(flat)
  if cfg.scan_layers:
    out = _stack_layers(out)
  return cfg, out


def _stack_layers(tree):
  """The inverse of convert.common.unstack_layers: 'layers_{i}' subtrees -> one 'layers'."""
  if not isinstance(tree, dict):
    return tree
  layer_keys = sorted((k for k in tree if re.fullmatch(r"layers_\d+", k)),
                      key=lambda k: int(k.split("_")[1]))
  out = {k: _stack_layers(v) for k, v in tree.items() if k not in layer_keys}
  if layer_keys:
    flats = [traverse_util.flatten_dict(tree[k]) for k in layer_keys]
    out["layers"] = traverse_util.unflatten_dict(
        {key: np.stack([f[key] for f in flats]) for key in flats[0]})
  return out


def from_hf_peft(folder: str, model_cfg, params):
  """(model config with model.peft set from the adapter, params with its adapter leaves).

  `model_cfg` / `params`: the base model as llm_jax.convert.from_hf returned it (scan_layers
  params work too when the adapter covers every layer). Errors name the offending tensor or
  adapter_config.json field.
  """
  config, tensors = _read_folder(folder)
  peft_type = config.get("peft_type")
  if peft_type in PROMPT_TYPES:
    from llm_jax.peft import hf_peft_prompts  # pylint: disable=g-import-not-at-top
    cfg, subtree = hf_peft_prompts.convert(config, tensors, model_cfg)
    flat = traverse_util.flatten_dict(dict(params))
    flat.update(traverse_util.flatten_dict(dict(subtree)))
    return cfg, traverse_util.unflatten_dict(flat)
  if peft_type not in LORA_TYPES:
    raise ConversionError(f"{folder}/{_CONFIG_FILE}: peft_type={peft_type!r} is not supported; "
                          f"supported: {LORA_TYPES + PROMPT_TYPES}")
  return _convert_lora_ia3(folder, config, tensors, model_cfg, params)
