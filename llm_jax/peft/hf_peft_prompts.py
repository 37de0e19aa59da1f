"""Hugging Face peft prompt-learning adapters -> cfg.peft fields and the new parameters.

peft saves one tensor, 'prompt_embeddings', whatever the reparameterisation:
  PROMPT_TUNING [num_virtual_tokens * num_transformer_submodules, d_model]: the soft prompt
    (seq2seq models: the encoder uses the first num_virtual_tokens rows, as peft does).
  P_TUNING      the same, already computed by the prompt encoder (MLP or LSTM).
  PREFIX_TUNING [num_virtual_tokens, num_layers * 2 * token_dim]: every layer's keys and values
    (token_dim = kv_heads * head_dim), the output of the MLP when prefix_projection was set.
These become a plain soft prompt / plain per-layer prefix tables (prefix_hidden = 0). When the
encoder weights themselves are given (a full peft state dict, e.g. 'prompt_encoder.default.
transform.0.weight'), PREFIX_TUNING with prefix_projection keeps its MLP (prefix_hidden =
encoder_hidden_size, params under {stack}/prefix_encoder), and P_TUNING's MLP / LSTM encoder is
run here in NumPy and stored as a soft prompt.

Seq2seq PREFIX_TUNING follows what peft does with transformers >= 4.56: only the decoder's
self-attention gets a prefix (the cross-attention part is invalidated, the encoder sees none);
peft doubles its [num_layers * 2] entries and hands decoder layer l entries 4l and 4l+1 of the
doubled list, i.e. the keys/values of peft's 'layer' 2l mod num_layers; that selection is
applied here.
"""

import copy
from typing import Optional

import jax.numpy as jnp
import ml_collections
import numpy as np

from llm_jax.convert.common import ConversionError

SUPPORTED = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")


def _find(tensors: dict, suffix: str) -> Optional[np.ndarray]:
  """The tensor named `suffix` or ending with '.' + suffix (None if absent; an error if two)."""
  names = [n for n in tensors if n == suffix or n.endswith("." + suffix)]
  if len(names) > 1:
    raise ConversionError(f"several tensors end with {suffix!r}: {sorted(names)}")
  return np.asarray(tensors[names[0]]) if names else None


def _need(tensors: dict, suffix: str) -> np.ndarray:
  t = _find(tensors, suffix)
  if t is None:
    raise ConversionError(f"the adapter has no tensor {suffix!r}; it has {sorted(tensors)}")
  return t


def _check_shape(name: str, array: np.ndarray, shape: tuple) -> None:
  if tuple(array.shape) != tuple(shape):
    raise ConversionError(f"{name!r} has shape {tuple(array.shape)}; the model needs {tuple(shape)}")


def _copy_config(model_cfg) -> ml_collections.ConfigDict:
  if isinstance(model_cfg, ml_collections.FrozenConfigDict):
    return ml_collections.ConfigDict(model_cfg)
  return copy.deepcopy(model_cfg)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm_direction(x_TxI, w_ih, w_hh, b_ih, b_hh):
  """One direction of a torch.nn.LSTM layer (gates i, f, g, o) over x [T, I] -> [T, H]."""
  h = np.zeros(w_hh.shape[1], np.float64)
  c = np.zeros_like(h)
  out = []
  for x in x_TxI:
    i, f, g, o = np.split(w_ih @ x + b_ih + w_hh @ h + b_hh, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    out.append(h)
  return np.stack(out)


def _linear(tensors, name, x):
  return x @ _need(tensors, f"{name}.weight").astype(np.float64).T + _need(
      tensors, f"{name}.bias").astype(np.float64)


def p_tuning_prompts(adapter_config: dict, tensors: dict) -> np.ndarray:
  """peft's PromptEncoder (P_TUNING, MLP or LSTM reparameterisation) in NumPy: the prompts
  [num_virtual_tokens * num_transformer_submodules, token_dim] it feeds the model."""
  x = _need(tensors, "embedding.weight").astype(np.float64)
  kind = str(adapter_config.get("encoder_reparameterization_type", "MLP")).split(".")[-1].upper()
  relu = lambda v: np.maximum(v, 0.0)
  if kind == "MLP":
    h = relu(_linear(tensors, "mlp_head.0", x))
    h = relu(_linear(tensors, "mlp_head.2", h))
    return _linear(tensors, "mlp_head.4", h)
  if kind == "LSTM":
    h = x
    for layer in range(int(adapter_config.get("encoder_num_layers", 2))):
      directions = []
      for suffix, reverse in (("", False), ("_reverse", True)):
        w = [_need(tensors, f"lstm_head.{n}_l{layer}{suffix}").astype(np.float64)
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        seq = h[::-1] if reverse else h
        out = _lstm_direction(seq, *w)
        directions.append(out[::-1] if reverse else out)
      h = np.concatenate(directions, axis=-1)
    return _linear(tensors, "mlp_head.2", relu(_linear(tensors, "mlp_head.0", h)))
  raise ConversionError(f"P_TUNING encoder_reparameterization_type={kind!r} is not supported "
                        f"(MLP or LSTM)")


def _prefix_layer_indices(family: str, num_layers: int, peft_layers: int) -> np.ndarray:
  """[num_layers, 2]: for each of our layers, the index of its key and value among peft's
  num_layers * 2 entries."""
  layers = np.arange(num_layers)
  if family == "encoder_decoder":
    if num_layers > peft_layers:
      raise ConversionError(f"peft's seq2seq prefix of {peft_layers} layers reaches only that many "
                            f"decoder layers; the model has {num_layers}")
    return np.stack([(4 * layers) % (2 * peft_layers), (4 * layers + 1) % (2 * peft_layers)], 1)
  if num_layers != peft_layers:
    raise ConversionError(f"adapter num_layers={peft_layers}; the model has {num_layers} layers")
  return np.stack([2 * layers, 2 * layers + 1], 1)


def _per_layer(stack: str, tree: dict, num_layers: int, scan: bool) -> dict:
  """{stack: {layers_i: {self_attention: {prefix: tree[i]}}}} (scan: one 'layers' subtree)."""
  if scan:
    return {stack: {"layers": {"self_attention": {"prefix": tree}}}}
  return {stack: {f"layers_{i}": {"self_attention": {"prefix": {k: v[i] for k, v in tree.items()}}}
                  for i in range(num_layers)}}


def convert(adapter_config: dict, tensors: dict, model_cfg):
  """(model config with the cfg.peft fields set, nested dict of the new parameters from the root).

  adapter_config: peft's adapter_config.json; tensors: adapter_model.safetensors (names as peft
  saves them, or with a module prefix such as 'prompt_encoder.default.'); model_cfg: the base
  model's config (from llm_jax.convert.from_hf). Other tensors (modules_to_save, e.g. a
  classification head) are not converted here.
  """
  peft_type = str(adapter_config.get("peft_type", "")).split(".")[-1].upper()
  if peft_type not in SUPPORTED:
    raise ConversionError(f"peft_type {adapter_config.get('peft_type')!r} is not a prompt-learning "
                          f"type converted here; supported: {SUPPORTED}")
  cfg = _copy_config(model_cfg)
  dtype = jnp.dtype(cfg.param_dtype)
  p = int(adapter_config["num_virtual_tokens"])

  if peft_type in ("PROMPT_TUNING", "P_TUNING"):
    prompts = _find(tensors, "prompt_embeddings")
    if prompts is None and peft_type == "P_TUNING":
      prompts = p_tuning_prompts(adapter_config, tensors)
    elif prompts is None:
      prompts = _need(tensors, "embedding.weight")
    if prompts.ndim != 2 or prompts.shape[0] < p or prompts.shape[1] != cfg.d_model:
      raise ConversionError(f"'prompt_embeddings' has shape {tuple(prompts.shape)}; the model "
                            f"needs at least {p} rows of d_model={cfg.d_model}")
    cfg.peft.prompt_length = p
    return cfg, {"soft_prompt": {"embedding": np.asarray(prompts[:p]).astype(dtype)}}

  g = cfg.num_kv_heads or cfg.num_heads
  k = cfg.head_dim or cfg.d_model // cfg.num_heads
  token_dim = int(adapter_config.get("token_dim") or g * k)
  if token_dim != g * k:
    raise ConversionError(f"adapter token_dim={token_dim}; the model's keys have kv_heads * "
                          f"head_dim = {g} * {k} = {g * k}")
  family = cfg.family
  stack = "encoder" if family == "encoder" else "decoder"
  num_layers = (cfg.num_decoder_layers or cfg.num_layers) if family == "encoder_decoder" \
      else cfg.num_layers
  peft_layers = int(adapter_config.get("num_layers") or cfg.num_layers)
  index_Nx2 = _prefix_layer_indices(family, num_layers, peft_layers)
  cfg.peft.prefix_length = p

  transform_w = _find(tensors, "transform.2.weight")
  if adapter_config.get("prefix_projection") and transform_w is not None:
    hidden = int(transform_w.shape[1])
    embedding = _need(tensors, "embedding.weight")
    w0, b0 = _need(tensors, "transform.0.weight"), _need(tensors, "transform.0.bias")
    b2 = _need(tensors, "transform.2.bias")
    _check_shape("embedding.weight", embedding, (p, token_dim))
    _check_shape("transform.0.weight", w0, (hidden, token_dim))
    _check_shape("transform.2.weight", transform_w, (peft_layers * 2 * token_dim, hidden))
    w2_Hx2LxGxK = transform_w.T.reshape(hidden, 2 * peft_layers, g, k)
    cfg.peft.prefix_hidden = hidden
    encoder = {
        "embedding": embedding,
        "wi": {"kernel": w0.T, "bias": b0},
        "wo": {"kernel": w2_Hx2LxGxK[:, index_Nx2], "bias": b2.reshape(2 * peft_layers, g, k)[index_Nx2]},
    }
    encoder = _tree_astype(encoder, dtype)
    return cfg, {stack: {"prefix_encoder": encoder}}

  kv = _need(tensors, "prompt_embeddings")
  _check_shape("prompt_embeddings", kv, (p, peft_layers * 2 * token_dim))
  kv_2LxPxGxK = np.transpose(kv.reshape(p, 2 * peft_layers, g, k), (1, 0, 2, 3))
  kv_Nx2xPxGxK = kv_2LxPxGxK[index_Nx2]
  cfg.peft.prefix_hidden = 0
  tree = {"key": kv_Nx2xPxGxK[:, 0], "value": kv_Nx2xPxGxK[:, 1]}
  return cfg, _per_layer(stack, _tree_astype(tree, dtype), num_layers, cfg.scan_layers)


def _tree_astype(tree, dtype):
  if isinstance(tree, dict):
    return {k: _tree_astype(v, dtype) for k, v in tree.items()}
  return np.ascontiguousarray(np.asarray(tree).astype(dtype))
