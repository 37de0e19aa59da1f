"""Encoder-only model (BERT, RoBERTa): bidirectional stack, MLM / pooler / NSP / class heads."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import heads
from llm_jax.models import layers
from llm_jax.models import prompts
from llm_jax.models import transformer

Array = jax.Array


class EncoderOnly(nn.Module):
  """Returns 'hidden_states' [B,L,D], and per config 'logits' (MLM) [B,L,V], 'pooled' [B,D],
  'nsp_logits' [B,2], 'class_logits' [B,num_labels].

  The classifier reads 'pooled' when cfg.pooler (BERT; RoBERTa's dense+tanh classification
  head is the same structure), else the first token's hidden state.

  Prompt learning (cfg.peft, see models/prompts.py): real tokens sit at input_positions (default
  arange) + prefix_length + prompt_length, as in HF/peft. Prefix tuning adds learned keys/values
  to every self-attention layer. Prompt tuning puts the soft prompt (token type 0) before the
  inputs; per-token outputs ('hidden_states', 'logits') cover the real tokens only, while
  'pooled' / 'nsp_logits' / 'class_logits' read the first position of the whole sequence, the
  first soft-prompt token, as HF's pooler does under peft. The prompt takes the segment id of the
  row's first segment: in packed rows only the first segment sees it (bidirectional prompt
  states would otherwise mix the segments), so pack one sequence per row with prompt tuning.
  """
  cfg: object

  @nn.compact
  def __call__(self, inputs: Array, input_segment_ids: Optional[Array] = None,
               input_positions: Optional[Array] = None, token_type_ids: Optional[Array] = None,
               deterministic: bool = True) -> dict[str, Array]:
    cfg = self.cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = layers.kernel_init(cfg.init_std)
    transformer.check_inputs("inputs", inputs)
    segment_ids_BxL = transformer.default_segment_ids(input_segment_ids, inputs)
    positions_BxL = transformer.default_positions(input_positions, inputs, False, False,
                                                  "input_positions")
    positions_BxL = positions_BxL + prompts.position_shift(cfg)
    token_embed = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), dtype=dtype,
                               param_dtype=param_dtype, init=init, name="token_embed")
    x_BxLxD = token_embed(inputs)
    prompt_length = cfg.peft.prompt_length
    if prompt_length:
      if token_type_ids is None and cfg.type_vocab_size:
        token_type_ids = jnp.zeros_like(inputs, jnp.int32)
      x_BxLxD, positions_BxL, segment_ids_BxL, token_type_ids = prompts.prepend_prompt(
          prompts.SoftPrompt(cfg, name="soft_prompt")(), x_BxLxD, positions_BxL,
          segment_ids_BxL, cfg.peft.prefix_length, token_type_ids)
    full_BxLxD = transformer.Stack(cfg, cfg.num_layers, mask_type="bidirectional",
                                   use_token_types=True, prefix_length=cfg.peft.prefix_length,
                                   name="encoder")(
        x_BxLxD, positions_BxL, segment_ids_BxL, token_type_ids_BxL=token_type_ids,
        deterministic=deterministic)
    x_BxLxD = full_BxLxD[:, prompt_length:]
    out = {"hidden_states": x_BxLxD}
    if cfg.mlm_head:
      out["logits"] = heads.MLMHead(cfg, name="mlm_head")(x_BxLxD, token_embed.embedding)

    first_BxD = full_BxLxD[:, 0]
    if cfg.pooler:
      first_BxD = jnp.tanh(layers.dense(cfg.d_model, -1, ("embed", "mlp"), ("mlp",),
                                        use_bias=True, dtype=dtype, param_dtype=param_dtype,
                                        init=init, name="pooler",
                                        peft=cfg.peft)(first_BxD))
      out["pooled"] = first_BxD
    if cfg.nsp_head:
      if not cfg.pooler:
        raise ValueError("nsp_head=True needs pooler=True")
      out["nsp_logits"] = layers.dense(2, -1, ("embed", None), (None,), use_bias=True,
                                       dtype=dtype, param_dtype=param_dtype, init=init,
                                       name="nsp_head",
                                       peft=cfg.peft)(first_BxD).astype(jnp.float32)
    if cfg.num_labels:
      h_BxD = nn.Dropout(cfg.dropout_rate)(first_BxD, deterministic=deterministic)
      out["class_logits"] = layers.dense(cfg.num_labels, -1, ("embed", None), (None,),
                                         use_bias=True, dtype=dtype, param_dtype=param_dtype,
                                         init=init, name="classifier",
                                         peft=cfg.peft)(h_BxD).astype(jnp.float32)
    return out
