"""Encoder-decoder model (T5 v1.0 / v1.1, BART) with a shared token embedding.

In decode mode the decoder's self-attention uses the KV cache; cross-attention recomputes its
keys and values from the encoder states at every step.

Prompt learning (cfg.peft, see models/prompts.py), as peft does for seq2seq models:
  - prompt tuning: the soft prompt goes before the encoder input (positions 0..P-1, the real
    encoder tokens from P; it takes the segment id of the row's first segment, so in packed rows
    only the first segment sees it). `encode` returns the states of prompt + inputs [B, P+Le, D]
    and `decode` takes them with the segment ids of the inputs alone (it adds the prompt's);
    __call__'s 'encoder_hidden_states' cover the real tokens only.
  - prefix tuning: learned keys/values in every decoder self-attention layer, decoder positions
    shifted by prefix_length (peft gives the decoder past_key_values of that length and
    invalidates their cross-attention part; the encoder gets no prefix).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import heads
from llm_jax.models import layers
from llm_jax.models import prompts
from llm_jax.models import transformer

Array = jax.Array


class EncoderDecoder(nn.Module):
  cfg: object

  def setup(self):
    cfg = self.cfg
    self.token_embed = layers.embed(
        cfg.vocab_size, cfg.d_model, ("vocab", "embed"), dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype), init=layers.kernel_init(cfg.init_std))
    if cfg.peft.prompt_length:
      self.soft_prompt = prompts.SoftPrompt(cfg)
    self.encoder = transformer.Stack(cfg, cfg.num_layers, mask_type="bidirectional",
                                     deepnorm_stack="encoder")
    self.decoder = transformer.Stack(cfg, cfg.num_decoder_layers or cfg.num_layers,
                                     mask_type="causal", has_cross=True,
                                     deepnorm_stack="decoder",
                                     prefix_length=cfg.peft.prefix_length)
    self.head = heads.LMHead(cfg)

  def encode(self, inputs: Array, input_segment_ids: Optional[Array] = None,
             input_positions: Optional[Array] = None, deterministic: bool = True) -> Array:
    """Encoder hidden states [B, Le, D] ([B, prompt_length + Le, D] with prompt tuning)."""
    cfg = self.cfg
    transformer.check_inputs("inputs", inputs)
    segment_ids_BxL = transformer.default_segment_ids(input_segment_ids, inputs)
    positions_BxL = transformer.default_positions(input_positions, inputs, False, False,
                                                  "input_positions")
    x_BxLxD = self.token_embed(inputs)
    if cfg.peft.prompt_length:
      x_BxLxD, positions_BxL, segment_ids_BxL = prompts.prepend_prompt(
          self.soft_prompt(), x_BxLxD, positions_BxL + cfg.peft.prompt_length, segment_ids_BxL,
          0)
    return self.encoder(x_BxLxD, positions_BxL, segment_ids_BxL, deterministic=deterministic)

  def decode(self, encoded: Array, decoder_inputs: Array,
             input_segment_ids: Optional[Array] = None,
             decoder_segment_ids: Optional[Array] = None,
             decoder_positions: Optional[Array] = None, deterministic: bool = True,
             decode: bool = False) -> Array:
    """Decoder logits [B, Ld, V] given the encoder states [B, Le, D] (from `encode`).

    input_segment_ids are those of the encoder inputs; with prompt tuning the soft prompt's are
    put before them (encoded then has prompt_length more positions).
    """
    cfg = self.cfg
    transformer.check_inputs("decoder_inputs", decoder_inputs)
    if input_segment_ids is None:
      encoder_segment_ids_BxS = jnp.ones(encoded.shape[:2], jnp.int32)
    else:
      encoder_segment_ids_BxS = input_segment_ids.astype(jnp.int32)
      if cfg.peft.prompt_length:
        prompt_BxP = jnp.broadcast_to(prompts.first_segment(encoder_segment_ids_BxS)[:, None],
                                      (encoded.shape[0], cfg.peft.prompt_length))
        encoder_segment_ids_BxS = jnp.concatenate([prompt_BxP, encoder_segment_ids_BxS], axis=1)
    segment_ids_BxL = transformer.default_segment_ids(decoder_segment_ids, decoder_inputs)
    positions_BxL = transformer.default_positions(decoder_positions, decoder_inputs, decode,
                                                  self.is_initializing(), "decoder_positions")
    positions_BxL = positions_BxL + cfg.peft.prefix_length
    x_BxLxD = self.decoder(self.token_embed(decoder_inputs), positions_BxL, segment_ids_BxL,
                           encoded_BxSxD=encoded, encoder_segment_ids_BxS=encoder_segment_ids_BxS,
                           deterministic=deterministic, decode=decode)
    return self.head(x_BxLxD, self.token_embed.embedding)

  def __call__(self, inputs: Array, decoder_inputs: Array,
               input_segment_ids: Optional[Array] = None, input_positions: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, deterministic: bool = True,
               decode: bool = False) -> dict[str, Array]:
    encoded_BxSxD = self.encode(inputs, input_segment_ids, input_positions, deterministic)
    logits_BxLxV = self.decode(encoded_BxSxD, decoder_inputs, input_segment_ids,
                               decoder_segment_ids, decoder_positions, deterministic, decode)
    return {"logits": logits_BxLxV,
            "encoder_hidden_states": encoded_BxSxD[:, self.cfg.peft.prompt_length:]}
