r"""Sentence embeddings: pooled final hidden states of any model, optionally L2-normalised.

  # a sentence-transformers folder (modules.json, 1_Pooling/config.json read) or any HF folder
  python -m llm_jax.embed --hf=/path/to/folder --texts_file=texts.txt --out=embeddings.npy
  python -m llm_jax.embed --workdir=/tmp/gpt_tiny --pooling=last --texts_file=texts.txt --out=e.npy

From Python: `llm_jax.embed(model, params, texts, tokenizer=tok, pooling='mean', normalize=True)`
(this module is callable as that function). Pooling over the non-padding tokens: 'mean', 'max',
'mean_sqrt_len' (sum / sqrt(length)), 'cls' (the first token) or 'last' (the last token, for
decoders). Encoders read their final hidden states, decoders the decoder stack's output (after
its final norm), encoder-decoders the encoder's states. Texts are tokenized with the tokenizer's
own special tokens when it is a Hugging Face tokenizer.json (as sentence-transformers does),
else [CLS] ... [SEP] around them for encoders.
"""

import functools
import json
import os
import sys
import types
from collections.abc import Sequence

import numpy as np

POOLINGS = ("mean", "max", "mean_sqrt_len", "cls", "last")
# sentence-transformers' Pooling modes (1_Pooling/config.json) -> ours.
_ST_MODES = {"mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len", "cls": "cls",
             "lasttoken": "last"}
_ST_LEGACY_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean",
                   "pooling_mode_lasttoken": "lasttoken"}


def sentence_transformers_settings(folder: str) -> dict:
  """{'pooling', 'normalize', 'max_length'} from a sentence-transformers folder; {} without
  modules.json."""
  modules_path = os.path.join(folder, "modules.json")
  if not os.path.isfile(modules_path):
    return {}
  with open(modules_path, encoding="utf-8") as f:
    modules = json.load(f)
  settings = {"normalize": False}
  for module in modules:
    kind = module.get("type", "").rsplit(".", 1)[-1]
    if kind == "Pooling":
      config_path = os.path.join(folder, module.get("path", ""), "config.json")
      if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{modules_path} names a Pooling module, but {config_path} is missing")
      with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
      mode = config.get("pooling_mode")
      if mode is None:
        mode = [m for key, m in _ST_LEGACY_KEYS.items() if config.get(key)] or ["mean"]
      modes = [mode] if isinstance(mode, str) else list(mode)
      if len(modes) != 1 or modes[0] not in _ST_MODES:
        raise ValueError(f"{config_path}: pooling mode {modes} is not supported; one of "
                         f"{sorted(_ST_MODES)}")
      if config.get("include_prompt", True) is False:
        raise ValueError(f"{config_path}: include_prompt=false is not supported")
      settings["pooling"] = _ST_MODES[modes[0]]
    elif kind == "Normalize":
      settings["normalize"] = True
    elif kind not in ("Transformer",):
      raise ValueError(f"{modules_path}: module type {module.get('type')!r} is not supported "
                       "(Transformer, Pooling, Normalize are)")
  bert_config = os.path.join(folder, "sentence_bert_config.json")
  if os.path.isfile(bert_config):
    with open(bert_config, encoding="utf-8") as f:
      max_length = json.load(f).get("max_seq_length")
    if max_length:
      settings["max_length"] = int(max_length)
  return settings


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(path: str):
  import tokenizers  # pylint: disable=g-import-not-at-top
  return tokenizers.Tokenizer.from_file(path)


def encode_texts(tokenizer, texts: Sequence[str], family: str, max_length: int) -> list[list[int]]:
  """Token ids of each text with the special tokens its model expects, cut to max_length."""
  path = getattr(tokenizer, "path", None)
  specials = tokenizer.specials
  rows = []
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise ValueError(f"texts[{i}] is a {type(text).__name__}, not a string")
    if path and str(path).endswith(".json"):
      hf = _hf_tokenizer(str(path))
      hf.no_truncation()
      ids = hf.encode(text, add_special_tokens=True).ids
      if len(ids) > max_length:  # keep the closing special token, as a truncating tokenizer does
        ids = ids[:max_length - 1] + ids[-1:] if family == "encoder" else ids[:max_length]
    elif family == "encoder" and specials.cls_id is not None and specials.sep_id is not None:
      ids = [specials.cls_id] + tokenizer.encode(text)[:max_length - 2] + [specials.sep_id]
    else:
      ids = tokenizer.encode(text)[:max_length]
    if not ids:
      raise ValueError(f"texts[{i}] has no tokens")
    rows.append(ids)
  return rows


def _hidden_fn(model, family: str):
  import jax  # pylint: disable=g-import-not-at-top

  def hidden(params, tokens_BxL, segment_ids_BxL, positions_BxL):
    variables = {"params": params}
    if family == "encoder":
      return model.apply(variables, tokens_BxL, input_segment_ids=segment_ids_BxL,
                         input_positions=positions_BxL)["hidden_states"]
    if family == "encoder_decoder":
      return model.apply(variables, tokens_BxL, input_segment_ids=segment_ids_BxL,
                         input_positions=positions_BxL, method="encode")
    _, state = model.apply(
        variables, tokens_BxL, input_segment_ids=segment_ids_BxL, input_positions=positions_BxL,
        capture_intermediates=lambda module, name: module.name == "decoder" and name == "__call__",
        mutable=["intermediates"])
    return state["intermediates"]["decoder"]["__call__"][0]

  return jax.jit(hidden)


def pool(hidden_BxLxD, mask_BxL, pooling: str):
  """[B, D] pooled over the positions where mask is 1 (right padding)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  hidden_BxLxD = hidden_BxLxD.astype(jnp.float32)
  mask_BxLx1 = mask_BxL[..., None].astype(jnp.float32)
  lengths_Bx1 = jnp.maximum(jnp.sum(mask_BxLx1, axis=1), 1.0)
  if pooling == "mean":
    return jnp.sum(hidden_BxLxD * mask_BxLx1, axis=1) / lengths_Bx1
  if pooling == "mean_sqrt_len":
    return jnp.sum(hidden_BxLxD * mask_BxLx1, axis=1) / jnp.sqrt(lengths_Bx1)
  if pooling == "max":
    return jnp.max(jnp.where(mask_BxLx1 > 0, hidden_BxLxD, -1e9), axis=1)
  if pooling == "cls":
    return hidden_BxLxD[:, 0]
  if pooling == "last":
    last_B = jnp.sum(mask_BxL, axis=1).astype(jnp.int32) - 1
    return jnp.take_along_axis(hidden_BxLxD, last_B[:, None, None], axis=1)[:, 0]
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


@functools.lru_cache(maxsize=8)
def _embed_fn(model, family: str, pooling: str, normalize: bool):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  hidden = _hidden_fn(model, family)

  def embed_batch(params, tokens_BxL, segment_ids_BxL, positions_BxL):
    pooled_BxD = pool(hidden(params, tokens_BxL, segment_ids_BxL, positions_BxL),
                      segment_ids_BxL, pooling)
    if normalize:
      pooled_BxD = pooled_BxD / jnp.maximum(jnp.linalg.norm(pooled_BxD, axis=-1, keepdims=True),
                                            1e-12)
    return pooled_BxD

  return jax.jit(embed_batch)


def embed(model, params, texts: Sequence[str] | Sequence[Sequence[int]], *, tokenizer=None,
          pooling: str = "mean", normalize: bool = True, batch_size: int = 32,
          max_length: int | None = None, progress: bool = False) -> np.ndarray:
  """[N, d_model] float32 embeddings of `texts` (strings with `tokenizer`, or token-id lists)."""
  import jax  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  from llm_jax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  cfg = model.cfg
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if isinstance(texts, str) or not len(texts):
    raise ValueError("texts must be a non-empty list of strings (or token-id lists)")
  max_length = min(max_length or cfg.max_len, cfg.max_len)
  if isinstance(texts[0], str):
    if tokenizer is None:
      raise ValueError("embedding strings needs tokenizer=")
    rows = encode_texts(tokenizer, texts, cfg.family, max_length)
  else:
    rows = [[int(t) for t in row][:max_length] for row in texts]
  pad_id = tokenizer.specials.pad_id if tokenizer is not None else cfg.pad_token_id
  embed_batch = _embed_fn(model, cfg.family, pooling, bool(normalize))
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
  out = np.zeros((len(rows), cfg.d_model), np.float32)
  starts = range(0, len(rows), batch_size)
  for start in tqdm.tqdm(starts, desc="embedding", unit="batch", disable=not progress):
    chunk = order[start:start + batch_size]
    length = scoring._bucket(max(len(rows[i]) for i in chunk))  # pylint: disable=protected-access
    tokens, segment_ids, positions = scoring._pad_rows(  # pylint: disable=protected-access
        [rows[i] for i in chunk], batch_size, length, pad_id)
    vectors = np.asarray(jax.device_get(embed_batch(params, tokens, segment_ids, positions)))
    out[chunk] = vectors[:len(chunk)]
  return out


def load_embedder(folder: str | None = None, workdir: str | None = None):
  """(model, params, tokenizer, settings) of an HF / sentence-transformers folder or a workdir."""
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  if folder:
    model, params, _, tokenizer = load.load_from_hf(folder)
    return model, params, tokenizer, sentence_transformers_settings(folder)
  model, params, _, tokenizer = load.load_from_workdir(workdir)
  return model, params, tokenizer, {}


def main(argv=None) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from llm_jax import cli_flags  # pylint: disable=g-import-not-at-top
  values = cli_flags.flag_values(__name__ + ".cli")
  hf = flags.DEFINE_string("hf", None, "HF / sentence-transformers folder.", flag_values=values)
  workdir = flags.DEFINE_string("workdir", None, "Training workdir.", flag_values=values)
  texts_file = flags.DEFINE_string("texts_file", None, "One text per line.", flag_values=values)
  out = flags.DEFINE_string("out", None, "Write the [N, D] float32 array here (.npy).",
                            flag_values=values)
  pooling = flags.DEFINE_enum("pooling", None, list(POOLINGS), "Default: the folder's Pooling "
                              "config, else mean.", flag_values=values)
  normalize = flags.DEFINE_bool("normalize", None, "L2-normalise (default: the folder's "
                                "Normalize module, else true).", flag_values=values)
  batch_size = flags.DEFINE_integer("batch_size", 32, "Texts per batch.", flag_values=values)
  values(argv or sys.argv)
  try:
    if bool(hf.value) == bool(workdir.value):
      raise ValueError("give exactly one of --hf or --workdir")
    if not texts_file.value or not os.path.isfile(texts_file.value):
      raise ValueError(f"--texts_file={texts_file.value!r} does not exist")
    with open(texts_file.value, encoding="utf-8") as f:
      texts = [line for line in f.read().splitlines() if line.strip()]
    if not texts:
      raise ValueError(f"--texts_file={texts_file.value!r} has no text")
    model, params, tokenizer, settings = load_embedder(hf.value, workdir.value)
    vectors = embed(model, params, texts, tokenizer=tokenizer,
                    pooling=pooling.value or settings.get("pooling", "mean"),
                    normalize=(settings.get("normalize", True) if normalize.value is None
                               else normalize.value),
                    batch_size=batch_size.value, max_length=settings.get("max_length"),
                    progress=True)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{len(texts)} texts -> embeddings of shape {vectors.shape}")
  if out.value:
    directory = os.path.dirname(os.path.abspath(out.value))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp_{os.getpid()}.npy")
    np.save(tmp, vectors)
    os.replace(tmp, out.value)
    print(f"wrote {out.value}")
  return 0


class _CallableModule(types.ModuleType):
  """`llm_jax.embed(...)` calls `embed` while `python -m llm_jax.embed` runs this module."""

  def __call__(self, *args, **kwargs):
    return embed(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
  sys.exit(main())
