"""Chat templates: rendering chat rows as transformers' apply_chat_template does, and their loss spans.

Chat rows (the row has task.messages_field, a list of {"role", "content"}) are rendered with the
jinja2 template of task.chat_template (a tokenizer_config.json, its folder, or a .jinja file)
the way transformers' apply_chat_template renders (sandboxed, trim_blocks, lstrip_blocks,
variables messages, add_generation_prompt, bos_token, eos_token, ...), or else with
BUILTIN_CHAT_TEMPLATE ('<|role|>\\ncontent\\n' per message, eos after each assistant content).
Loss spans, by character offsets in the rendered text: the template's {% generation %} blocks if
it has any (as transformers' return_assistant_tokens_mask), else each assistant message's
content, found in order by string search; an eos_token written right after a span joins it.
The text is then encoded piece by piece at the span boundaries (bos / eos token strings map to
their ids), so a weight belongs to exactly the tokens of its span. Too long: cut at the end.
"""

import dataclasses
import datetime
import functools
import json
import os
import re

import ml_collections

BUILTIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' and eos_token is defined %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
_GENERATION_START, _GENERATION_END = "\ue000", "\ue001"  # Private-use marks around {% generation %}.
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                       "mask_token")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A jinja2 chat template and the special-token strings its file defines."""

  source: str
  path: str = ""  # '' = BUILTIN_CHAT_TEMPLATE
  special_tokens: dict = dataclasses.field(default_factory=dict)  # e.g. {'eos_token': '</s>'}


def _token_string(value) -> str | None:
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) else None


def load_chat_template(path: str) -> ChatTemplate:
  """The chat template of a tokenizer_config.json ('chat_template' key, a string or a list of
  named templates: 'default' wins), its folder (a chat_template.jinja there wins), or a .jinja file."""
  path = os.path.expanduser(path)
  config_path, jinja_path = path, None
  if os.path.isdir(path):
    config_path = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(os.path.join(path, "chat_template.jinja")):
      jinja_path = os.path.join(path, "chat_template.jinja")
  elif path.endswith(".jinja"):
    config_path, jinja_path = os.path.join(os.path.dirname(path), "tokenizer_config.json"), path
  config = {}
  if os.path.isfile(config_path):
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  elif jinja_path is None:
    raise FileNotFoundError(f"task.chat_template={path!r}: no tokenizer_config.json there")
  special = {k: s for k in _SPECIAL_TOKEN_KEYS if (s := _token_string(config.get(k))) is not None}
  if jinja_path:
    with open(jinja_path, encoding="utf-8") as f:
      return ChatTemplate(f.read(), jinja_path, special)
  template = config.get("chat_template")
  if isinstance(template, list):
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    template = named.get("default", next(iter(named.values()), None))
  if not isinstance(template, str):
    raise ValueError(f"task.chat_template={path!r}: {config_path} has no 'chat_template' string")
  return ChatTemplate(template, config_path, special)


@functools.lru_cache(maxsize=16)
def _compiled(source: str):
  import jinja2  # pylint: disable=g-import-not-at-top
  import jinja2.ext  # pylint: disable=g-import-not-at-top
  from jinja2 import sandbox  # pylint: disable=g-import-not-at-top

  class GenerationBlock(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: marks the loss span (transformers' tag)."""

    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller):
      return _GENERATION_START + caller() + _GENERATION_END

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(source)


def _render_marked(template: str, messages: list[dict], add_generation_prompt: bool,
                   variables: dict) -> str:
  return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    **variables)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = False,
                **variables) -> str:
  """The rendered text, as transformers' apply_chat_template(tokenize=False) renders it.

  `variables` are the template's other names, e.g. bos_token='<s>', eos_token='</s>'.
  """
  text = _render_marked(template, messages, add_generation_prompt, variables)
  return text.replace(_GENERATION_START, "").replace(_GENERATION_END, "")


def _special_strings(tokenizer) -> dict[str, int]:
  """Text of the tokenizer's bos / eos tokens -> id (so '</s>' in a rendering is eos)."""
  s = tokenizer.specials
  out = {}
  for token_id in (s.bos_id, s.eos_id):
    if token_id is not None and (text := tokenizer.decode([token_id])):
      out[text] = token_id
  return out


def encode_with_specials(tokenizer, text: str, specials: dict[str, int]) -> list[int]:
  """tokenizer.encode, except that the strings of `specials` become their ids."""
  if not specials or not text:
    return tokenizer.encode(text) if text else []
  pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
  ids = []
  for i, piece in enumerate(re.split(pattern, text)):
    if i % 2:
      ids.append(specials[piece])
    elif piece:
      ids += tokenizer.encode(piece)
  return ids


class ChatRenderer:
  """Renders and tokenizes chat rows with task.chat_template (or BUILTIN_CHAT_TEMPLATE)."""

  def __init__(self, cfg: ml_collections.ConfigDict, tokenizer):
    path = cfg.task.chat_template
    self.template = load_chat_template(path) if path else ChatTemplate(BUILTIN_CHAT_TEMPLATE)
    self.tokenizer = tokenizer
    self.specials = _special_strings(tokenizer)
    variables = {}
    for key, token_id in (("bos_token", tokenizer.specials.bos_id),
                          ("eos_token", tokenizer.specials.eos_id),
                          ("pad_token", tokenizer.specials.pad_id)):
      if token_id is not None and (text := tokenizer.decode([token_id])):
        variables[key] = text
    variables.update(self.template.special_tokens)  # The template's own file wins, as in HF.
    self.variables = variables

  def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return render_chat(self.template.source, messages, add_generation_prompt, **self.variables)

  def tokens(self, messages: list[dict], name: str = "a row") -> tuple[list[int], list[float]]:
    """(ids, loss weights) of a whole conversation: 1 on the assistant spans (module doc)."""
    marked = _render_marked(self.template.source, messages, False, self.variables)
    text, spans = _strip_generation_marks(marked)
    if not spans and _GENERATION_START not in marked:
      spans = _assistant_content_spans(text, messages, name)
    eos = self.variables.get("eos_token")
    if eos:
      spans = [(a, b + len(eos)) if text.startswith(eos, b) else (a, b) for a, b in spans]
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids, weights = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
      piece = encode_with_specials(self.tokenizer, text[a:b], self.specials)
      inside = any(s <= a and b <= e for s, e in spans)
      ids += piece
      weights += [1.0 if inside else 0.0] * len(piece)
    return ids, weights

  def prompt_tokens(self, messages: list[dict]) -> list[int]:
    return encode_with_specials(self.tokenizer, self.render(messages, True), self.specials)


def _strip_generation_marks(text: str) -> tuple[str, list[tuple[int, int]]]:
  out, spans, start, n = [], [], None, 0
  for piece in re.split(f"([{_GENERATION_START}{_GENERATION_END}])", text):
    if piece == _GENERATION_START:
      start = n
    elif piece == _GENERATION_END:
      if start is not None and n > start:
        spans.append((start, n))
      start = None
    else:
      out.append(piece)
      n += len(piece)
  return "".join(out), spans


def _assistant_content_spans(text: str, messages: list[dict], name: str) -> list[tuple[int, int]]:
  spans, position = [], 0
  for i, message in enumerate(messages):
    content = message["content"]
    if not content:
      continue
    found = text.find(content, position)
    if found < 0 and content.strip():
      content = content.strip()
      found = text.find(content, position)
    if found < 0:
      if message["role"] == "assistant":
        raise ValueError(f"{name}: the chat template's rendering does not hold assistant message {i}'s "
                         "content verbatim, so its loss span cannot be found (a template with "
                         "{% generation %} blocks marks the spans itself)")
      continue
    position = found + len(content)
    if message["role"] == "assistant":
      spans.append((found, position))
  return spans
