"""Decoder-only language model (GPT-2, LLaMA): causal or prefix-LM."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import heads
from llm_jax.models import layers
from llm_jax.models import prompts
from llm_jax.models import transformer

Array = jax.Array


class DecoderOnly(nn.Module):
  """token_embed -> decoder Stack (cfg.attention: 'causal' | 'prefix') -> LM head.

  Returns 'logits' [B, L, V], and with cfg.num_labels > 0 'class_logits' [B, num_labels]
  (float32): the bias-free 'classifier' on the final hidden state of each row's last real token
  (the last position whose input_segment_ids != 0; without segment ids the last position), as
  HF's GPT2/LlamaForSequenceClassification `score` on a right-padded batch.

  Prompt learning (cfg.peft, see models/prompts.py): real tokens sit at input_positions (default
  arange) + prefix_length + prompt_length, as HF/peft number them after past_key_values or a
  soft prompt of that length. Prefix tuning adds learned keys/values to every self-attention
  layer. Prompt tuning puts the soft prompt before the inputs when add_soft_prompt (default:
  unless decode; KV-cache decoding passes True to the call that allocates the cache and to the
  prefill, which writes the prompt into the cache, and nothing at later steps). Outputs cover
  the real tokens only. The prompt takes the segment id of the row's first segment and is seen
  by every segment of a packed row (its states depend on the prompt alone under causal
  attention, so each packed sequence sees what it would see alone); it is causal even with
  attention='prefix'.
  """
  cfg: object

  @nn.compact
  def __call__(self, inputs: Array, input_segment_ids: Optional[Array] = None,
               input_positions: Optional[Array] = None, prefix_mask: Optional[Array] = None,
               deterministic: bool = True, decode: bool = False,
               add_soft_prompt: Optional[bool] = None) -> dict[str, Array]:
    cfg = self.cfg
    transformer.check_inputs("inputs", inputs)
    batch, length = inputs.shape
    segment_ids_BxL = transformer.default_segment_ids(input_segment_ids, inputs)
    positions_BxL = transformer.default_positions(input_positions, inputs, decode,
                                                  self.is_initializing(), "input_positions")
    positions_BxL = positions_BxL + prompts.position_shift(cfg)
    prefix_BxL = None
    if cfg.attention == "prefix":
      prefix_BxL = (jnp.zeros_like(inputs, jnp.int32) if prefix_mask is None
                    else prefix_mask.astype(jnp.int32))
    token_embed = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"),
                               dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                               init=layers.kernel_init(cfg.init_std), name="token_embed")
    x_BxLxD = token_embed(inputs)
    prompt_length = cfg.peft.prompt_length
    with_prompt = False
    if prompt_length:
      soft_prompt_PxD = prompts.SoftPrompt(cfg, name="soft_prompt")()
      with_prompt = (not decode) if add_soft_prompt is None else add_soft_prompt
      if with_prompt:
        x_BxLxD, positions_BxL, segment_ids_BxL, prefix_BxL = prompts.prepend_prompt(
            soft_prompt_PxD, x_BxLxD, positions_BxL, segment_ids_BxL, cfg.peft.prefix_length,
            prefix_BxL)
    x_BxLxD = transformer.Stack(
        cfg, cfg.num_layers, mask_type=cfg.attention, prefix_length=cfg.peft.prefix_length,
        shared_positions=prompts.position_shift(cfg) if prompt_length else 0, name="decoder")(
            x_BxLxD, positions_BxL, segment_ids_BxL, prefix_BxL, deterministic=deterministic,
            decode=decode)
    if with_prompt:
      x_BxLxD = x_BxLxD[:, prompt_length:]
    logits_BxLxV = heads.LMHead(cfg, name="head")(x_BxLxD, token_embed.embedding)
    out = {"logits": logits_BxLxV}
    if cfg.num_labels:
      last_B = prompts.last_real_index(input_segment_ids, length, batch)
      last_BxD = jnp.take_along_axis(x_BxLxD, last_B[:, None, None], axis=1)[:, 0]
      out["class_logits"] = layers.dense(
          cfg.num_labels, -1, ("embed", None), (None,), use_bias=False,
          dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
          init=layers.kernel_init(cfg.init_std), name="classifier")(last_BxD).astype(jnp.float32)
    return out
