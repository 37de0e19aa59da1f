"""The experiment's `task` config section: what is learned (its loss) and which data fields hold it."""

import ml_collections

NAMES = ("pretrain", "classification", "regression", "seq2seq", "sft", "cloze")


def default_task_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # 'pretrain': the objective section's transform on a text corpus (also domain-adaptive
  # pretraining from init_from). The others read rows of data.train_files / data.eval_files
  # (JSONL, CSV, TSV) or of a TFDS dataset, with the field names below.
  c.name = "pretrain"
  # classification / regression / cloze: text (+ text_pair) -> label.
  c.text_field = "text"
  c.text_pair_field = ""  # '' = single texts
  c.label_field = "label"
  c.labels = ()  # class names, in id order; () = labels are integer ids < model.num_labels
  # cloze: the row rendered with cloze_template, then each label's verbalizer is scored.
  c.cloze_template = "{text} Label:"
  c.verbalizers = ()  # one string per label, e.g. (" negative", " positive")
  # seq2seq: input -> target (encoder-decoder, or a prefix-LM decoder).
  c.input_field = "input"
  c.target_field = "target"
  # sft: prompt -> response, or a chat 'messages' list of {role, content}; loss on responses.
  c.prompt_field = "prompt"
  c.response_field = "response"
  c.messages_field = "messages"
  c.template = "### Instruction:\n{prompt}\n\n### Response:\n"
  c.chat_template = ""  # a tokenizer_config.json (or its folder) with a chat_template; '' = none
  # Evaluation by generation (seq2seq / sft): exact match, BLEU, ROUGE on this many examples.
  c.eval_generate_examples = 32  # 0 = off
  c.eval_max_new_tokens = 32
  return c
