"""`generate`: KV-cache decoding (greedy, sampling, beam search) as one compiled program.

The prompt batch is left-padded (pad = segment 0, positions start at 0 at each row's first
token) and prefilled in one call; the decode loop is one `lax.while_loop` that stops early
when every row has emitted EOS. Encoder-decoder models run the encoder once.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.decoding import beam_search
from llm_jax.decoding import cache as cache_lib
from llm_jax.decoding import sampling

METHODS = ("greedy", "sample", "beam")


class Generation(NamedTuple):
  tokens: jax.Array  # [B, max_new_tokens] int32; pad after EOS (and after an early stop)
  scores: jax.Array  # [B] float32: greedy/sample: sum of log p(token) up to EOS; beam: the
  #                    length-normalised score sum(log p) / generated_length**length_penalty


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  max_new_tokens: int
  method: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  num_beams: int = 4
  length_penalty: float = 1.0
  early_stopping: Union[bool, str] = False
  eos_id: Optional[int] = None
  pad_id: int = 0
  prefix_lm: bool = False
  vocab_limit: Optional[int] = None


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
  """Ragged token lists -> (tokens_BxP, segment_ids_BxP) with the padding on the left."""
  lengths = [len(p) for p in prompts]
  width = max(lengths)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  segment_ids = np.zeros((len(prompts), width), np.int32)
  for row, (prompt, n) in enumerate(zip(prompts, lengths)):
    if n:
      tokens[row, width - n:] = prompt
      segment_ids[row, width - n:] = 1
  return tokens, segment_ids


def right_pad(inputs: Sequence[Sequence[int]], pad_id: int):
  """Ragged token lists -> (tokens_BxP, segment_ids_BxP) with the padding on the right."""
  tokens, segment_ids = left_pad([list(x)[::-1] for x in inputs], pad_id)
  return tokens[:, ::-1].copy(), segment_ids[:, ::-1].copy()


def _as_rows(prompts, name):
  if isinstance(prompts, (np.ndarray, jax.Array)):
    prompts = np.asarray(prompts)
    if prompts.ndim != 2:
      raise ValueError(f"{name} must be a list of token lists or a [batch, length] array, "
                       f"got an array of shape {prompts.shape}")
    prompts = prompts.tolist()
  rows = [list(map(int, p)) for p in prompts]
  if not rows:
    raise ValueError(f"{name} is empty")
  for i, row in enumerate(rows):
    if not row:
      raise ValueError(f"{name}[{i}] has no tokens")
  return rows


# ----------------------------------------------------------------------------- model adapters
# Each adapter returns (prefill, step, init_fn):
#   prefill() -> (logits_BxV, decode_state): the logits of generated token 0;
#   step(decode_state, tokens_B, i) -> (logits_BxV, decode_state): feeds generated token i-1
#     and returns the logits of token i;
#   init_fn(batch) -> {'cache': an empty cache} (only its shapes are used).
# decode_state = (cache, context); the context (prompt lengths or encoder states) has the batch
# first and is repeated, never reordered, for beams.


def _decoder_only(model, params, tokens_BxP, segment_ids_BxP, opts, cache_len):
  positions_BxP = jnp.maximum(jnp.cumsum(segment_ids_BxP, axis=1) - 1, 0)
  lengths_B = jnp.sum(segment_ids_BxP, axis=1)
  batch = tokens_BxP.shape[0]
  # Prompt tuning: the soft prompt goes into the cache at prefill (the cache is allocated with
  # room for it); later steps feed the new token alone.
  with_prompt = {"add_soft_prompt": True} if model.cfg.peft.prompt_length else {}

  def init_fn(b):
    zeros_BxL = jnp.zeros((b, cache_len), jnp.int32)
    return model.apply({"params": params}, zeros_BxL, input_positions=zeros_BxL, decode=True,
                       mutable=["cache"], **with_prompt)[1]

  empty_cache = cache_lib.empty_cache(init_fn, batch)

  def apply(cache, tokens_BxL, segment_ids_BxL, positions_BxL, prefix_BxL, **kwargs):
    out, updated = model.apply(
        {"params": params, "cache": cache}, tokens_BxL, input_segment_ids=segment_ids_BxL,
        input_positions=positions_BxL, prefix_mask=prefix_BxL, deterministic=True,
        decode=True, mutable=["cache"], **kwargs)
    return out["logits"][:, -1].astype(jnp.float32), updated["cache"]

  def prefill():
    prefix_BxP = segment_ids_BxP if opts.prefix_lm else None
    logits_BxV, cache = apply(empty_cache, tokens_BxP, segment_ids_BxP, positions_BxP,
                              prefix_BxP, **with_prompt)
    return logits_BxV, (cache, lengths_B)

  def step(state, tokens_B, i):
    cache, lengths_B = state
    ones_Bx1 = jnp.ones((tokens_B.shape[0], 1), jnp.int32)
    prefix_Bx1 = jnp.zeros_like(ones_Bx1) if opts.prefix_lm else None
    logits_BxV, cache = apply(cache, tokens_B[:, None], ones_Bx1,
                              (lengths_B + i - 1)[:, None], prefix_Bx1)
    return logits_BxV, (cache, lengths_B)

  return prefill, step, init_fn


def _encoder_decoder(model, params, tokens_BxP, segment_ids_BxP, opts, cache_len):
  cfg = model.cfg
  batch, width = tokens_BxP.shape
  positions_BxP = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (batch, width))

  def init_fn(b):
    zeros_BxL = jnp.zeros((b, cache_len), jnp.int32)
    encoded_BxPxD = jnp.zeros((b, width, cfg.d_model), jnp.dtype(cfg.dtype))
    return model.apply({"params": params}, encoded_BxPxD, zeros_BxL,
                       decoder_positions=zeros_BxL, decode=True, method="decode",
                       mutable=["cache"])[1]

  empty_cache = cache_lib.empty_cache(init_fn, batch)

  def step(state, tokens_B, i):
    cache, (encoded_BxPxD, enc_segment_ids_BxP) = state
    b = tokens_B.shape[0]
    logits_Bx1xV, updated = model.apply(
        {"params": params, "cache": cache}, encoded_BxPxD, tokens_B[:, None],
        input_segment_ids=enc_segment_ids_BxP,
        decoder_segment_ids=jnp.ones((b, 1), jnp.int32),
        decoder_positions=jnp.full((b, 1), i, jnp.int32), deterministic=True, decode=True,
        method="decode", mutable=["cache"])
    return (logits_Bx1xV[:, -1].astype(jnp.float32),
            (updated["cache"], (encoded_BxPxD, enc_segment_ids_BxP)))

  def prefill():
    encoded_BxPxD = model.apply({"params": params}, tokens_BxP, input_segment_ids=segment_ids_BxP,
                                input_positions=positions_BxP, deterministic=True,
                                method="encode")
    start_B = jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32)
    return step((empty_cache, (encoded_BxPxD, segment_ids_BxP)), start_B, 0)

  return prefill, step, init_fn


# ----------------------------------------------------------------------------- decode loops


def _greedy_or_sample(prefill, step, rng, opts, stream_fn):
  n = opts.max_new_tokens

  def choose(logits_BxV, i, done_B):
    if opts.method == "greedy":
      token_B = sampling.greedy_token(logits_BxV)
    else:
      token_B = sampling.sample_token(jax.random.fold_in(rng, i), logits_BxV,
                                      temperature=opts.temperature, top_k=opts.top_k,
                                      top_p=opts.top_p)
    token_B = jnp.where(done_B, opts.pad_id, token_B)
    log_prob_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV), token_B[:, None], 1)[:, 0]
    log_prob_B = jnp.where(done_B, 0.0, log_prob_B)
    if opts.eos_id is not None:
      done_B = done_B | (token_B == opts.eos_id)
    if stream_fn is not None:
      jax.debug.callback(stream_fn, i, token_B, done_B, ordered=True)
    return token_B, log_prob_B, done_B

  logits_BxV, state = prefill()
  batch = logits_BxV.shape[0]
  token_B, scores_B, done_B = choose(logits_BxV, 0, jnp.zeros((batch,), bool))
  tokens_BxN = jnp.full((batch, n), opts.pad_id, jnp.int32).at[:, 0].set(token_B)

  def cond(carry):
    i, _, _, _, done_B = carry
    return (i < n) & ~jnp.all(done_B)

  def body(carry):
    i, state, tokens_BxN, scores_B, done_B = carry
    logits_BxV, state = step(state, tokens_BxN[:, i - 1], i)
    token_B, log_prob_B, done_B = choose(logits_BxV, i, done_B)
    tokens_BxN = jax.lax.dynamic_update_slice(tokens_BxN, token_B[:, None], (0, i))
    return i + 1, state, tokens_BxN, scores_B + log_prob_B, done_B

  carry = (jnp.array(1, jnp.int32), state, tokens_BxN, scores_B, done_B)
  _, _, tokens_BxN, scores_B, _ = jax.lax.while_loop(cond, body, carry)
  return Generation(tokens_BxN, scores_B)


def _beam(prefill, step, opts, batch_axes):
  n, k = opts.max_new_tokens, opts.num_beams
  beam_step = functools.partial(
      beam_search.beam_search_step, eos_id=opts.eos_id, max_new_tokens=n,
      length_penalty=opts.length_penalty, early_stopping=opts.early_stopping)

  logits_BxV, (cache, context) = prefill()
  batch = logits_BxV.shape[0]
  cache = cache_lib.repeat_rows(cache, batch_axes, k)
  context = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), context)
  log_probs_BKxV = jnp.repeat(jax.nn.log_softmax(logits_BxV), k, axis=0)
  beams = beam_search.init_beam_state(batch, k, n, opts.pad_id)
  beams, parent_BxK = beam_step(beams, log_probs_BKxV, jnp.array(0, jnp.int32))

  def cond(carry):
    i, _, beams, _ = carry
    return (i < n) & beam_search.beam_search_continues(beams, opts.early_stopping)

  def body(carry):
    i, cache, beams, parent_BxK = carry
    rows_BK = (parent_BxK + k * jnp.arange(batch)[:, None]).reshape(-1)
    cache = cache_lib.gather_rows(cache, batch_axes, rows_BK)
    tokens_BK = jax.lax.dynamic_index_in_dim(beams.running_tokens, i - 1, axis=2,
                                             keepdims=False).reshape(-1)
    logits_BKxV, (cache, _) = step((cache, context), tokens_BK, i)
    beams, parent_BxK = beam_step(beams, jax.nn.log_softmax(logits_BKxV), i)
    return i + 1, cache, beams, parent_BxK

  carry = (jnp.array(1, jnp.int32), cache, beams, parent_BxK)
  _, _, beams, _ = jax.lax.while_loop(cond, body, carry)
  return Generation(beams.finished_tokens[:, 0], beams.finished_scores[:, 0])


def _limit_vocab(prefill, step, vocab_limit):
  """Ids >= vocab_limit (padding of the embedding beyond the tokenizer) are never chosen."""
  def limit(logits_BxV):
    allowed_V = jnp.arange(logits_BxV.shape[-1]) < vocab_limit
    return jnp.where(allowed_V, logits_BxV, sampling.NEG_INF)

  def limited_prefill():
    logits_BxV, state = prefill()
    return limit(logits_BxV), state

  def limited_step(state, tokens_B, i):
    logits_BxV, state = step(state, tokens_B, i)
    return limit(logits_BxV), state

  return limited_prefill, limited_step


@functools.partial(jax.jit, static_argnames=("model", "opts", "stream_fn"))
def _generate(model, params, tokens_BxP, segment_ids_BxP, rng, opts, stream_fn=None):
  if model.cfg.family == "encoder_decoder":
    adapter, cache_len = _encoder_decoder, opts.max_new_tokens
  else:
    adapter, cache_len = _decoder_only, tokens_BxP.shape[1] + opts.max_new_tokens - 1
  prefill, step, init_fn = adapter(model, params, tokens_BxP, segment_ids_BxP, opts, cache_len)
  if opts.vocab_limit is not None:
    prefill, step = _limit_vocab(prefill, step, opts.vocab_limit)
  if opts.method == "beam":
    return _beam(prefill, step, opts, cache_lib.batch_axes(init_fn))
  return _greedy_or_sample(prefill, step, rng, opts, stream_fn)


def generate(model, params, prompts, *, max_new_tokens: int, method: str = "greedy",
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_beams: int = 4,
             length_penalty: float = 1.0, early_stopping: Union[bool, str] = False,
             eos_id: Optional[int] = None, pad_id: Optional[int] = None, rng=None,
             prefix_lm: bool = False, vocab_limit: Optional[int] = None,
             stream_fn: Optional[Callable[[Any, Any, Any], None]] = None) -> Generation:
  """Continues each prompt by up to `max_new_tokens` tokens.

  Args:
    model, params: a decoder-only or encoder-decoder model from `models.build_model` and its
      parameters.
    prompts: a list of token-id lists (ragged) or a [batch, length] array; the encoder inputs for
      encoder-decoder models.
    method: 'greedy', 'sample' (temperature, then top_k, then top_p filtering) or 'beam'
      (num_beams, length_penalty, early_stopping as in Hugging Face `generate`).
    eos_id: a row stops after emitting it (None: never stop early).
    pad_id: fills the output after EOS; default the model's pad_token_id.
    prefix_lm: the prompt is a bidirectional prefix (models with attention='prefix').
    vocab_limit: only ids below it are generated (e.g. the tokenizer's vocab_size when the
      model's vocabulary is padded beyond it).
    stream_fn: greedy/sample only; called from inside the compiled loop as
      stream_fn(step, tokens_B, done_B) after each generated token.
  Returns:
    Generation(tokens [B, max_new_tokens], scores [B]).
  """
  cfg = model.cfg
  if cfg.family not in ("decoder", "encoder_decoder"):
    raise ValueError(f"generate needs a decoder or encoder_decoder model, got family={cfg.family!r}")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if method == "beam" and num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {num_beams}")
  if method == "beam" and stream_fn is not None:
    raise ValueError("stream_fn is not supported with method='beam'")
  if early_stopping not in (True, False, "never"):
    raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
  if method == "sample":
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if rng is None:
      raise ValueError("method='sample' needs an rng key")
  if prefix_lm and (cfg.family != "decoder" or cfg.attention != "prefix"):
    raise ValueError("prefix_lm=True needs a decoder model with attention='prefix', got "
                     f"family={cfg.family!r} attention={cfg.get('attention')!r}")
  pad_id = cfg.pad_token_id if pad_id is None else pad_id
  rows = _as_rows(prompts, "prompts")
  longest = max(len(r) for r in rows)
  # Prefix / prompt tuning: the learned prefix and the soft prompt take the first positions.
  prefix_length, prompt_length = cfg.peft.prefix_length, cfg.peft.prompt_length
  if cfg.family == "decoder":
    virtual = prefix_length + prompt_length
    if virtual + longest + max_new_tokens > cfg.max_len:
      raise ValueError(f"prompt length {longest} + max_new_tokens {max_new_tokens} (+ {virtual} "
                       f"prefix/soft-prompt positions) exceeds the model's context "
                       f"max_len={cfg.max_len}")
    tokens_BxP, segment_ids_BxP = left_pad(rows, pad_id)
  else:
    if prompt_length + longest > cfg.max_len or prefix_length + max_new_tokens > cfg.max_len:
      raise ValueError(f"encoder input length {longest} (+ {prompt_length} soft-prompt "
                       f"positions) or max_new_tokens {max_new_tokens} (+ {prefix_length} "
                       f"prefix positions) exceeds the model's max_len={cfg.max_len}")
    tokens_BxP, segment_ids_BxP = right_pad(rows, pad_id)
  for row in rows:
    if min(row) < 0 or max(row) >= cfg.vocab_size:
      raise ValueError(f"prompt token ids must be in [0, {cfg.vocab_size}), got {row}")
  opts = DecodeOptions(
      max_new_tokens=max_new_tokens, method=method, temperature=float(temperature),
      top_k=int(top_k), top_p=float(top_p), num_beams=int(num_beams),
      length_penalty=float(length_penalty), early_stopping=early_stopping, eos_id=eos_id,
      pad_id=int(pad_id), prefix_lm=prefix_lm,
      vocab_limit=None if vocab_limit is None else int(vocab_limit))
  rng = jax.random.key(0) if rng is None else rng
  return _generate(model, params, jnp.asarray(tokens_BxP), jnp.asarray(segment_ids_BxP), rng,
                   opts, stream_fn)
