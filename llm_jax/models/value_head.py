"""A critic for PPO: the decoder-only trunk with a per-token scalar value head.

The parameters are named as DecoderOnly's (token_embed, decoder/...), so a critic starts from
the policy's (or a reward model's) workdir with `init_from`; only `value_head` is new. Returns
'values' [B, L] (float32): V of the state after each prefix inputs[:t + 1].
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import layers
from llm_jax.models import transformer

Array = jax.Array


class ValueDecoder(nn.Module):
  cfg: object

  @nn.compact
  def __call__(self, inputs: Array, input_segment_ids: Optional[Array] = None,
               input_positions: Optional[Array] = None, prefix_mask: Optional[Array] = None,
               deterministic: bool = True) -> dict[str, Array]:
    cfg = self.cfg
    if cfg.peft.prompt_length or cfg.peft.prefix_length or cfg.attention == "prefix":
      raise ValueError("the PPO critic supports causal decoders without prompt learning")
    del prefix_mask
    transformer.check_inputs("inputs", inputs)
    segment_ids_BxL = transformer.default_segment_ids(input_segment_ids, inputs)
    positions_BxL = transformer.default_positions(input_positions, inputs, False,
                                                  self.is_initializing(), "input_positions")
    x_BxLxD = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"),
                           dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                           init=layers.kernel_init(cfg.init_std), name="token_embed")(inputs)
    x_BxLxD = transformer.Stack(cfg, cfg.num_layers, mask_type="causal", name="decoder")(
        x_BxLxD, positions_BxL, segment_ids_BxL, None, deterministic=deterministic)
    values_BxLx1 = layers.dense(
        1, -1, ("embed", None), (None,), use_bias=True, dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype), init=nn.initializers.zeros_init(),
        name="value_head")(x_BxLxD)
    return {"values": values_BxLx1[..., 0].astype(jnp.float32)}
