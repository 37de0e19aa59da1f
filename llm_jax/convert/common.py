"""Reading and writing Hugging Face model folders as NumPy, shared by the per-family converters.

A folder holds `config.json` and weights in `model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (read with torch, from the [hf] extra).
"""

import json
import os
import shutil
import tempfile

import ml_dtypes
import numpy as np

_SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}


class ConversionError(ValueError):
  """A Hugging Face folder or parameter tree that cannot be converted; the message names the tensor."""


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file into NumPy (bfloat16 included, via ml_dtypes).

  A truncated or malformed file is a ConversionError naming the file, the tensor and the
  expected vs actual byte counts.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    if size < 8 or header_len > size - 8:
      raise ConversionError(f"{path}: truncated safetensors file: its header needs {header_len} "
                            f"bytes after the first 8, the file has {max(size - 8, 0)}")
    try:
      header = json.loads(f.read(header_len))
    except ValueError as e:
      raise ConversionError(f"{path}: the safetensors header is not valid JSON ({e})") from e
    data = f.read()
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
    expected = int(np.prod(info["shape"], dtype=np.int64)) * dtype.itemsize
    actual = max(0, min(end, len(data)) - start)
    if end - start != expected or actual != expected:
      raise ConversionError(
          f"{path}: tensor {name!r} (shape {info['shape']}, {info['dtype']}) needs {expected} "
          f"bytes at data offsets [{start}, {end}), the file holds {actual} of them (file "
          f"{size} bytes, {8 + header_len + end} expected): truncated or corrupt download?")
    array = np.frombuffer(data[start:end], dtype=dtype)
    tensors[name] = array.reshape(info["shape"]).copy()
  return tensors


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    raw = array.tobytes()
    header[name] = {
      "dtype": _DTYPE_NAMES[array.dtype],
      "shape": list(array.shape),
      "data_offsets": [offset, offset + len(raw)],
    }
    chunks.append(raw)
    offset += len(raw)
  header_bytes = json.dumps(header, separators=(",", ":")).encode()
  header_bytes += b" " * (-len(header_bytes) % 8)
  with open(path, "wb") as f:
    f.write(len(header_bytes).to_bytes(8, "little"))
    f.write(header_bytes)
    for raw in chunks:
      f.write(raw)


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise ConversionError(
      f"{path} is a PyTorch checkpoint: install the [hf] extra (torch) to read it"
    ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {
    k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()
  }


def read_hf_folder(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """Returns (config.json as a dict, {tensor name: array}) of a local Hugging Face model folder."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise ConversionError(f"Hugging Face model folder {path!r} does not exist")
  if not os.path.exists(config_path):
    raise ConversionError(f"{path!r} has no config.json")
  with open(config_path) as f:
    config = json.load(f)
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  torch_bin = os.path.join(path, "pytorch_model.bin")
  if os.path.exists(single):
    tensors = read_safetensors(single)
  elif os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(read_safetensors(os.path.join(path, shard)))
  elif os.path.exists(torch_bin):
    tensors = _read_torch_bin(torch_bin)
  else:
    raise ConversionError(
      f"{path!r} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )
  return config, tensors


class TensorReader:
  """Takes tensors by name with an expected shape; errors name the tensor; reports unused ones."""

  def __init__(self, tensors: dict[str, np.ndarray], source: str = "checkpoint"):
    self._tensors = tensors
    self._source = source
    self.used: set[str] = set()

  def has(self, name: str) -> bool:
    return name in self._tensors

  def take(self, name: str, shape: tuple[int, ...] | None = None, dtype=np.float32) -> np.ndarray:
    if name not in self._tensors:
      raise ConversionError(f"tensor {name!r} is missing from the {self._source}")
    array = self._tensors[name]
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise ConversionError(
        f"tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}"
      )
    self.used.add(name)
    return np.asarray(array, dtype=dtype)

  def unused(self) -> list[str]:
    return sorted(set(self._tensors) - self.used)


def write_hf_folder(path: str, config: dict, tensors: dict[str, np.ndarray]) -> None:
  """Writes config.json + model.safetensors atomically: on any error no folder is left at `path`."""
  if os.path.exists(path) and os.listdir(path):
    raise ConversionError(f"output folder {path!r} exists and is not empty")
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
  try:
    with open(os.path.join(staging, "config.json"), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    write_safetensors(os.path.join(staging, "model.safetensors"), tensors)
    if os.path.exists(path):
      os.rmdir(path)
    os.rename(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


# How a model parameter is stored in a torch state dict (Linear weights are [out, in]):
#   'same'   as is (embeddings, norms, dense biases)
#   'linear' Dense kernel [in, out] <-> weight [out, in]
#   'heads'  q/k/v kernel [embed, heads, head_dim] <-> weight [heads * head_dim, embed]
#   'out'    attention output kernel [heads, head_dim, embed] <-> weight [embed, heads * head_dim]
#   'flat'   q/k/v bias [heads, head_dim] <-> [heads * head_dim]
#   'row'    vector [n] <-> [1, n] (BART's final_logits_bias buffer)
#   'experts' stacked expert kernels [experts, in, out] <-> [experts, out, in]
TORCH_LAYOUTS = ("same", "linear", "heads", "out", "flat", "row", "experts")


def torch_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torch tensor shape of a model parameter of `shape` stored with `layout`."""
  if layout == "same":
    return tuple(shape)
  if layout == "linear":
    return tuple(shape[::-1])
  if layout == "heads":
    return (shape[1] * shape[2], shape[0])
  if layout == "out":
    return (shape[2], shape[0] * shape[1])
  if layout == "flat":
    return (int(np.prod(shape)),)
  if layout == "row":
    return (1, *shape)
  if layout == "experts":
    return (shape[0], shape[2], shape[1])
  raise ValueError(f"unknown torch layout {layout!r}; expected one of {TORCH_LAYOUTS}")


def from_torch(layout: str, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """A torch tensor stored with `layout` -> the model parameter of `shape`."""
  if layout not in TORCH_LAYOUTS:
    raise ValueError(f"unknown torch layout {layout!r}; expected one of {TORCH_LAYOUTS}")
  w = w.T if layout in ("linear", "heads", "out") else w
  w = np.swapaxes(w, 1, 2) if layout == "experts" else w
  return np.ascontiguousarray(w.reshape(shape))


def to_torch(layout: str, p: np.ndarray) -> np.ndarray:
  """A model parameter -> the torch tensor stored with `layout`."""
  if layout == "heads":
    w = p.reshape(p.shape[0], -1).T
  elif layout == "out":
    w = p.reshape(-1, p.shape[-1]).T
  elif layout == "experts":
    w = np.swapaxes(p, 1, 2)
  else:
    w = p.T if layout == "linear" else p
  return np.ascontiguousarray(w.reshape(torch_shape(layout, p.shape)))


def params_from_torch(table, reader: TensorReader, abstract_params) -> dict:
  """Nested params built from `table` rows (param path tuple, torch name, layout).

  `abstract_params` (the model's init tree of shapes) sets the expected torch shapes, so a
  missing tensor or a shape mismatch raises a ConversionError naming the tensor.
  """
  params = {}
  for path, name, layout in table:
    shape = _at(abstract_params, path, name).shape
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = from_torch(layout, reader.take(name, torch_shape(layout, shape)), shape)
  return params


def params_to_torch(table, params) -> dict[str, np.ndarray]:
  """{torch name: tensor} of the `table` rows (param path tuple, torch name, layout)."""
  return {
    name: to_torch(layout, np.asarray(_at(params, path, name))) for path, name, layout in table
  }


def _at(tree, path, name):
  for key in path:
    if key not in tree:
      raise ConversionError(
        f"parameter {'/'.join(path)} (for tensor {name!r}) is not in the model's parameters"
      )
    tree = tree[key]
  return tree


def unstack_layers(params):
  """Params of a scan_layers model with each stacked 'layers' tree split into 'layers_{i}'."""
  if not isinstance(params, dict):
    return params
  out = {}
  for key, value in params.items():
    if key == "layers":
      first = value
      while isinstance(first, dict):
        first = next(iter(first.values()))
      for i in range(first.shape[0]):
        out[f"layers_{i}"] = _map(lambda x, i=i: x[i], value)
    else:
      out[key] = unstack_layers(value)
  return out


def _map(fn, tree):
  return {k: _map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


_REQUIRED = object()


def hf_field(hf_config: dict, name: str, default=_REQUIRED):
  """hf_config[name], or `default`; a missing required field raises a ConversionError naming it."""
  if name in hf_config and hf_config[name] is not None:
    return hf_config[name]
  if default is _REQUIRED:
    raise ConversionError(
      f"config.json has no {name!r} (model_type={hf_config.get('model_type')!r})"
    )
  return default


def sequence_classification_labels(hf_config: dict) -> int:
  """num_labels of a *ForSequenceClassification checkpoint (its 'score' head), else 0."""
  architectures = hf_config.get("architectures") or [""]
  if not architectures[0].endswith("ForSequenceClassification"):
    return 0
  return len(hf_config.get("id2label") or {}) or int(hf_config.get("num_labels", 2))


def sequence_classification_config(cfg, architecture: str) -> dict:
  """The config.json fields of a decoder with a `score` head of cfg.num_labels classes."""
  return {"architectures": [architecture], "num_labels": cfg.num_labels,
          "id2label": {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)},
          "label2id": {f"LABEL_{i}": i for i in range(cfg.num_labels)}}


def check_tied_head(reader: TensorReader, head_name: str, embedding: np.ndarray) -> None:
  """A tied model whose checkpoint also stores the head: it must equal the embedding."""
  if reader.has(head_name) and not np.array_equal(reader.take(head_name), embedding):
    raise ConversionError(
      f"tensor {head_name!r} differs from the token embedding although the "
      f"config ties them (tie_word_embeddings)"
    )


# Hugging Face activation names (transformers' ACT2FN) <-> model activations.
ACTIVATIONS_FROM_HF = {
  "gelu": "gelu",
  "gelu_python": "gelu",
  "gelu_new": "gelu_tanh",
  "gelu_fast": "gelu_tanh",
  "gelu_pytorch_tanh": "gelu_tanh",
  "relu": "relu",
  "silu": "silu",
  "swish": "silu",
}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def activation_from_hf(hf_config: dict, field: str, default: str = "gelu") -> str:
  name = hf_config.get(field, default)
  if name not in ACTIVATIONS_FROM_HF:
    raise ConversionError(
      f"config.json {field}={name!r} is not supported; supported: {sorted(ACTIVATIONS_FROM_HF)}"
    )
  return ACTIVATIONS_FROM_HF[name]


def activation_to_hf(model_cfg) -> str:
  if model_cfg.activation not in ACTIVATIONS_TO_HF:
    raise ConversionError(
      f"model.activation={model_cfg.activation!r} has no Hugging Face "
      f"equivalent here; supported: {sorted(ACTIVATIONS_TO_HF)}"
    )
  return ACTIVATIONS_TO_HF[model_cfg.activation]


def require(model_cfg, target: str, **expected) -> None:
  """Raises a ConversionError naming the first model field that `target` (e.g. "Hugging Face
  'llama'") cannot express; each expected value is one value or a tuple of allowed ones."""
  for field, allowed in expected.items():
    allowed = allowed if isinstance(allowed, tuple) else (allowed,)
    if model_cfg.get(field) not in allowed:
      raise ConversionError(
        f"model.{field}={model_cfg.get(field)!r} cannot be exported as "
        f"{target}; it needs {' or '.join(map(repr, allowed))}"
      )


def projection_rows(ours: tuple, hf: str, pairs, kernel_layout: str, bias_layout: str,
                    use_bias: bool) -> list[tuple[tuple[str, ...], str, str]]:
  """Table rows of dense layers `ours`/{name}/kernel (and bias) <-> `hf`{theirs}.weight (.bias)
  for each (name, theirs) of `pairs`."""
  rows = []
  for name, theirs in pairs:
    rows.append((ours + (name, "kernel"), f"{hf}{theirs}.weight", kernel_layout))
    if use_bias:
      rows.append((ours + (name, "bias"), f"{hf}{theirs}.bias", bias_layout))
  return rows


def params_from_table(cfg, table, reader: TensorReader) -> dict:
  """The model's params from the checkpoint tensors that `table` names, shapes checked against
  the model of `cfg`."""
  from llm_jax import models  # pylint: disable=g-import-not-at-top
  abstract = models.abstract_params(models.build_model(cfg), cfg)
  return params_from_torch(table, reader, abstract)
