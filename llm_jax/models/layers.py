"""Basic layers with logical axis names: dense, embedding, norms, feed-forward."""

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import lora
from llm_jax.peft import quantize

Array = jax.Array
Initializer = Callable

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}
# Gated activation -> activation of the gate branch: act(x W_0) * (x W_1).
GATED_ACTIVATIONS = {
    "swiglu": "silu",
    "geglu": "gelu",
    "geglu_tanh": "gelu_tanh",
    "reglu": "relu",
}


def get_activation(name: str) -> Callable[[Array], Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def kernel_init(std: float, scale: float = 1.0) -> Initializer:
  return nn.initializers.normal(stddev=std * scale)


class DenseGeneral(nn.Module):
  """y = x . kernel over `axis`, with the kernel created at its full shape so that its logical
  axis names hold from the start (flax's DenseGeneral builds a flat kernel and reshapes it,
  which breaks logical constraints on kernels with more than two axes).

  With `peft` (the model config's peft section), on the layers its regexes match (see
  llm_jax.models.lora for the layer path):
    LoRA:    y += (lora_alpha / lora_rank) * dropout(x) . lora_a . lora_b, lora_a
             [*contracted, rank] (HF peft's kaiming-uniform), lora_b [rank, *features] (zeros,
             so the model starts as the base model).
    (IA)^3:  ia3_scale (ones) multiplies the output features (after the bias), or for
             ia3_feedforward layers the input features.
  The kernel may be a quantize.QuantizedArray (QLoRA's frozen base); it is dequantised here.
  LoRA dropout runs when a 'dropout' rng is given unless `deterministic` says otherwise.
  """
  features: int | Sequence[int]
  axis: int | Sequence[int]
  kernel_axes: Sequence[str]
  bias_axes: Sequence[str]
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  init: Initializer
  peft: object = None

  @nn.compact
  def __call__(self, x: Array, deterministic: bool | None = None) -> Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axis = tuple(a % x.ndim for a in axis)
    contracted = tuple(x.shape[a] for a in axis)
    n_in, kernel_axes = len(axis), tuple(self.kernel_axes)
    kernel = self._kernel(contracted + features)
    path = lora.layer_path(self)
    use_lora = lora.lora_applies(self.peft, path)
    ia3 = lora.ia3_mode(self.peft, path)

    x = x.astype(self.dtype)
    if ia3 == "input":
      scale = self.param(lora.IA3_PARAM, nn.with_logical_partitioning(
          nn.initializers.ones_init(), kernel_axes[:n_in]), contracted, self.param_dtype)
      x = x * _broadcast_to_axes(scale.astype(self.dtype), axis, x.ndim)
    if use_lora:
      rank = self.peft.lora_rank
      lora.check_rank(rank, path, contracted, features)
      lora_a = self.param("lora_a", nn.with_logical_partitioning(
          lora.lora_a_init(n_in), kernel_axes[:n_in] + (None,)), contracted + (rank,),
                          self.param_dtype).astype(self.dtype)
      lora_b = self.param("lora_b", nn.with_logical_partitioning(
          nn.initializers.zeros_init(), (None,) + kernel_axes[n_in:]), (rank,) + features,
                          self.param_dtype).astype(self.dtype)
      x_lora = x
      if self.peft.lora_dropout > 0:
        if deterministic is None:
          deterministic = not self.has_rng("dropout")
        x_lora = nn.Dropout(self.peft.lora_dropout)(x, deterministic=deterministic)
      lora_scale = jnp.asarray(self.peft.lora_alpha / rank, self.dtype)

    kernel = kernel.astype(self.dtype)
    if axis == tuple(range(x.ndim - n_in, x.ndim)):
      # Trailing contraction as one 2-D matmul: XLA:CPU then differentiates it without
      # transposing activations.
      batch_shape, contract = x.shape[:x.ndim - n_in], math.prod(contracted)
      y = jnp.dot(x.reshape(-1, contract), kernel.reshape(contract, -1))
      if use_lora:
        h = jnp.dot(x_lora.reshape(-1, contract), lora_a.reshape(contract, -1)) * lora_scale
        y = y + jnp.dot(h, lora_b.reshape(h.shape[-1], -1))
      y = y.reshape(*batch_shape, *features)
    else:
      dims = ((axis, tuple(range(n_in))), ((), ()))
      y = jax.lax.dot_general(x, kernel, dims)
      if use_lora:
        h = jax.lax.dot_general(x_lora, lora_a, dims) * lora_scale
        y = y + jnp.tensordot(h, lora_b, axes=1)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             tuple(self.bias_axes)),
                        features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    if ia3 == "output":
      scale = self.param(lora.IA3_PARAM, nn.with_logical_partitioning(
          nn.initializers.ones_init(), kernel_axes[n_in:]), features, self.param_dtype)
      y = y * scale.astype(self.dtype)
    return y

  def _kernel(self, shape: tuple[int, ...]) -> Array:
    """The kernel parameter, dequantised when the params hold a QuantizedArray."""
    if self.has_variable("params", "kernel"):
      value = self.get_variable("params", "kernel")
      if isinstance(value, nn.Partitioned):
        value = value.unbox()
      if isinstance(value, quantize.QuantizedArray):
        kernel = quantize.dequantize(value)
        if kernel.shape != shape:
          raise ValueError(f"quantized kernel of {lora.layer_path(self)!r} has shape "
                           f"{kernel.shape}; the layer expects {shape}")
        return kernel
    return self.param("kernel", nn.with_logical_partitioning(self.init, tuple(self.kernel_axes)),
                      shape, self.param_dtype)


def _broadcast_to_axes(v: Array, axis: tuple[int, ...], ndim: int) -> Array:
  """v [x.shape[a] for a in axis] reshaped to broadcast against an x of rank ndim."""
  shape = [1] * ndim
  for i, a in enumerate(axis):
    shape[a] = v.shape[i]
  return jnp.transpose(v, sorted(range(len(axis)), key=lambda i: axis[i])).reshape(shape)


def dense(features, axis, kernel_axes: Sequence[str], bias_axes: Sequence[str], *,
          use_bias: bool, dtype, param_dtype, init: Initializer, name: str,
          peft=None) -> DenseGeneral:
  """A dense layer whose kernel and bias carry logical axis names; `peft` (the model config's
  peft section) adds LoRA / (IA)^3 where its targets match the layer."""
  return DenseGeneral(features=features, axis=axis, kernel_axes=tuple(kernel_axes),
                      bias_axes=tuple(bias_axes), use_bias=use_bias, dtype=dtype,
                      param_dtype=param_dtype, init=init, name=name, peft=peft)


def embed(num_embeddings: int, features: int, axes: Sequence, *, dtype, param_dtype,
          init: Initializer, name: str | None = None) -> nn.Embed:
  return nn.Embed(
      num_embeddings=num_embeddings, features=features, dtype=dtype, param_dtype=param_dtype,
      embedding_init=nn.with_logical_partitioning(init, tuple(axes)), name=name)


class LayerNorm(nn.Module):
  """LayerNorm (or RMSNorm: no mean, no bias, as in T5 and LLaMA) computed in float32."""
  kind: str = "layernorm"  # 'layernorm' | 'rmsnorm'
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD: Array) -> Array:
    if self.kind not in ("layernorm", "rmsnorm"):
      raise ValueError(f"Unknown norm {self.kind!r}; expected 'layernorm' or 'rmsnorm'")
    d = x_BxLxD.shape[-1]
    x = x_BxLxD.astype(jnp.float32)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ("embed",)), (d,), self.param_dtype)
    if self.kind == "rmsnorm":
      y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
      # As in Hugging Face: normalise in float32, cast, then scale.
      return scale.astype(self.dtype) * y.astype(self.dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ("embed",)), (d,), self.param_dtype)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


def make_norm(cfg, name: str) -> LayerNorm:
  return LayerNorm(kind=cfg.norm, epsilon=cfg.norm_eps, dtype=jnp.dtype(cfg.dtype),
                   param_dtype=jnp.dtype(cfg.param_dtype), name=name)


class MLP(nn.Module):
  """Feed-forward block: wo(act(wi x)), or gated wo(act(wi_0 x) * wi_1 x)."""
  cfg: object
  init_scale: float = 1.0  # DeepNet beta

  @nn.compact
  def __call__(self, x_BxLxD: Array, deterministic: bool = True) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = kernel_init(cfg.init_std, self.init_scale)

    def wi(name):
      return dense(cfg.d_ff, -1, ("embed", "mlp"), ("mlp",), use_bias=cfg.use_bias,
                   dtype=dtype, param_dtype=param_dtype, init=init, name=name,
                   peft=cfg.peft)(x_BxLxD)

    if cfg.activation in GATED_ACTIVATIONS:
      act = get_activation(GATED_ACTIVATIONS[cfg.activation])
      h_BxLxF = act(wi("wi_0")) * wi("wi_1")
    else:
      h_BxLxF = get_activation(cfg.activation)(wi("wi"))
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "mlp"))
    h_BxLxF = nn.Dropout(cfg.dropout_rate)(h_BxLxF, deterministic=deterministic)
    return dense(cfg.d_model, -1, ("mlp", "embed"), ("embed",), use_bias=cfg.use_bias,
                 dtype=dtype, param_dtype=param_dtype, init=init, name="wo",
                 peft=cfg.peft)(h_BxLxF)
