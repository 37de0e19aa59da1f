"""A harness task: where its documents come from, how each becomes a prompt, and how it is scored.

Three kinds (lm-evaluation-harness' output types):
  multiple_choice        each choice is scored by its log-likelihood after the prompt (acc,
                         acc_norm: the log-likelihood divided by the choice's length in characters)
  generate_until         the model continues the prompt until a stop sequence; the answer is
                         extracted (optionally by regex) and compared (exact_match, BLEU, ROUGE)
  loglikelihood_rolling  the whole document is scored in windows of the model's context
                         (word_perplexity, byte_perplexity, bits_per_byte)

Templates are strings with `{{field}}` placeholders (a document's field; `{{choices[1]}}` indexes a
list) or Python callables doc -> value.
"""

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood_rolling")
DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
KNOWN_METRICS = {
    "multiple_choice": ("acc", "acc_norm", "acc_bytes"),
    "generate_until": ("exact_match", "bleu", "rouge1", "rouge2", "rougeL"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}

Template = str | Callable[[dict], Any]
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(\d+)\s*\])?\s*\}\}")


class TaskError(ValueError):
  """A task that cannot be built or run, naming the task (file) and the field."""


def render(template: Template, doc: dict, where: str) -> Any:
  """The template filled from `doc`: a callable's value, a lone `{{field}}`'s value as it is
  (a list of choices, an int label), else the text with every placeholder replaced."""
  if callable(template):
    return template(doc)
  if not isinstance(template, str):
    return template  # a literal value, e.g. a list of choices or a label index

  def value(match):
    field, index = match.group(1), match.group(2)
    if field not in doc:
      raise TaskError(f"{where}: the template names field {field!r}, which the document lacks "
                      f"(fields: {sorted(doc)})")
    found = doc[field]
    return found[int(index)] if index is not None else found

  whole = _PLACEHOLDER.fullmatch(template.strip())
  if whole:
    return value(whole)
  return _PLACEHOLDER.sub(lambda m: str(value(m)), template)


@dataclasses.dataclass
class Task:
  """One evaluation task; `docs(split)` returns the documents of a split."""

  name: str
  output_type: str
  docs: Callable[[str], Sequence[dict]]
  doc_to_text: Template = ""
  doc_to_target: Template = ""
  doc_to_choice: Template | None = None
  eval_split: str = "test"
  fewshot_split: str | None = "train"
  target_delimiter: str = " "
  fewshot_delimiter: str = "\n\n"
  metrics: tuple[str, ...] = ()
  until: tuple[str, ...] = ("\n\n",)  # generate_until: stop sequences
  max_new_tokens: int = 32
  answer_regex: str | None = None  # generate_until: group 1 (or the match) is the answer
  do_sample: bool = False
  temperature: float = 1.0
  source: str = "built-in"  # where the task was defined, for error messages

  def __post_init__(self):
    where = f"task {self.name!r} ({self.source})"
    if self.output_type not in OUTPUT_TYPES:
      raise TaskError(f"{where}: output_type={self.output_type!r}, expected one of {OUTPUT_TYPES}")
    if self.output_type == "multiple_choice" and self.doc_to_choice is None:
      raise TaskError(f"{where}: a multiple_choice task needs doc_to_choice")
    self.metrics = tuple(self.metrics or DEFAULT_METRICS[self.output_type])
    unknown = set(self.metrics) - set(KNOWN_METRICS[self.output_type])
    if unknown:
      raise TaskError(f"{where}: unknown metric(s) {sorted(unknown)} for {self.output_type}; "
                      f"known: {KNOWN_METRICS[self.output_type]}")
    if self.answer_regex is not None:
      try:
        re.compile(self.answer_regex)
      except re.error as e:
        raise TaskError(f"{where}: answer_regex={self.answer_regex!r} is not a regex: {e}") from e
    self.until = tuple(self.until)

  @property
  def where(self) -> str:
    return f"task {self.name!r} ({self.source})"

  def text(self, doc: dict) -> str:
    return str(render(self.doc_to_text, doc, self.where))

  def choices(self, doc: dict) -> list[str]:
    choices = render(self.doc_to_choice, doc, self.where)
    if isinstance(choices, str) or not isinstance(choices, Sequence):
      raise TaskError(f"{self.where}: doc_to_choice must give a list of strings, got "
                      f"{type(choices).__name__}")
    if len(choices) < 2:
      raise TaskError(f"{self.where}: document {doc_label(doc)} has {len(choices)} choice(s); a "
                      "multiple-choice item needs at least 2")
    return [str(c) for c in choices]

  def gold_index(self, doc: dict, choices: list[str]) -> int:
    """The right choice: an index, or a string that is one of the choices (or a letter A-Z)."""
    gold = render(self.doc_to_target, doc, self.where)
    if isinstance(gold, str) and not gold.strip().lstrip("-").isdigit():
      if gold in choices:
        return choices.index(gold)
      raise TaskError(f"{self.where}: document {doc_label(doc)}: target {gold!r} is not one of "
                      f"the choices {choices}")
    index = int(gold)
    if not 0 <= index < len(choices):
      raise TaskError(f"{self.where}: document {doc_label(doc)}: target index {index} outside the "
                      f"{len(choices)} choices")
    return index

  def target_text(self, doc: dict) -> str:
    """The reference answer of a generation task, or the document of a rolling one."""
    target = render(self.doc_to_target, doc, self.where)
    if self.output_type == "multiple_choice":
      choices = self.choices(doc)
      return choices[self.gold_index(doc, choices)]
    return str(target)

  def fewshot_example(self, doc: dict) -> str:
    """A solved example for a k-shot prompt: its prompt, the delimiter and its answer."""
    return self.text(doc) + self.target_delimiter + self.target_text(doc)


def doc_label(doc: dict) -> str:
  return str(doc.get("_where", doc.get("id", "?")))
