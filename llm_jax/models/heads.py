"""Output heads: token logits (tied or untied), and the encoder's MLM / pooler heads."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import layers

Array = jax.Array


def tied_logits(x_BxLxD: Array, embedding_VxD: Array, dtype) -> Array:
  return jnp.einsum("bld,vd->blv", x_BxLxD.astype(dtype), embedding_VxD.astype(dtype))


class LMHead(nn.Module):
  """Token logits [B, L, V] in float32: tied to the token embedding or a separate kernel."""
  cfg: object

  @nn.compact
  def __call__(self, x_BxLxD: Array, embedding_VxD: Array) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    if cfg.logits_scale_by_dmodel:
      x_BxLxD = x_BxLxD * jnp.asarray(cfg.d_model ** -0.5, x_BxLxD.dtype)
    if cfg.tie_embeddings:
      logits_BxLxV = tied_logits(x_BxLxD, embedding_VxD, dtype)
    else:
      logits_BxLxV = layers.dense(cfg.vocab_size, -1, ("embed", "vocab"), ("vocab",),
                                  use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                  init=layers.kernel_init(cfg.init_std), name="lm_head",
                                  peft=cfg.peft)(x_BxLxD)
    if cfg.final_logits_bias:
      bias_V = self.param("final_logits_bias", nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ("vocab",)), (cfg.vocab_size,), param_dtype)
      logits_BxLxV = logits_BxLxV + bias_V.astype(logits_BxLxV.dtype)
    logits_BxLxV = nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))
    return logits_BxLxV.astype(jnp.float32)


class MLMHead(nn.Module):
  """BERT's masked-LM head: [dense + activation + norm] -> tied decoder + bias."""
  cfg: object

  @nn.compact
  def __call__(self, x_BxLxD: Array, embedding_VxD: Array) -> Array:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = layers.kernel_init(cfg.init_std)
    if cfg.mlm_head_transform:
      x_BxLxD = layers.dense(cfg.d_model, -1, ("embed", "mlp"), ("mlp",), use_bias=True,
                             dtype=dtype, param_dtype=param_dtype, init=init,
                             name="transform", peft=cfg.peft)(x_BxLxD)
      act = layers.GATED_ACTIVATIONS.get(cfg.activation, cfg.activation)
      x_BxLxD = layers.get_activation(act)(x_BxLxD)
      x_BxLxD = layers.make_norm(cfg, "transform_norm")(x_BxLxD)
    if cfg.tie_embeddings:
      logits_BxLxV = tied_logits(x_BxLxD, embedding_VxD, dtype)
    else:
      logits_BxLxV = layers.dense(cfg.vocab_size, -1, ("embed", "vocab"), ("vocab",),
                                  use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                  init=init, name="decoder", peft=cfg.peft)(x_BxLxD)
    bias_V = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             ("vocab",)),
                        (cfg.vocab_size,), param_dtype)
    logits_BxLxV = logits_BxLxV + bias_V.astype(logits_BxLxV.dtype)
    logits_BxLxV = nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))
    return logits_BxLxV.astype(jnp.float32)
