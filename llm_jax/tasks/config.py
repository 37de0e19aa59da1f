"""The experiment's `task` config section: what is learned (its loss) and which data fields hold it."""

import ml_collections

NAMES = ("pretrain", "classification", "regression", "seq2seq", "sft", "cloze", "reward_model",
         "dpo", "ipo", "simpo", "orpo", "grpo", "ppo", "ppo_value")


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
  # Preference pairs (reward_model, dpo, ipo, simpo, orpo): prompt_field (rendered with
  # task.template, or chat messages) + chosen / rejected completions (strings or assistant
  # messages). preference_format='hh_rlhf': chosen and rejected are whole dialogues sharing
  # their prompt (Anthropic HH-RLHF); the prompt is the text up to the last assistant turn.
  c.chosen_field = "chosen"
  c.rejected_field = "rejected"
  c.preference_format = "pairs"  # 'pairs' | 'hh_rlhf'
  c.margin_field = ""  # reward_model: a per-pair margin field ('' = none)
  c.beta = 0.1  # DPO/IPO/SimPO temperature; ORPO's lambda
  c.label_smoothing = 0.0  # conservative DPO / SimPO
  c.simpo_gamma = 0.5  # SimPO's target reward margin
  # dpo / ipo reference: 'in_step' runs the frozen reference (the init_from policy) in every
  # step; 'precomputed' scores every pair once before training (WORKDIR/reference_logps.npz)
  # and keeps no reference parameters.
  c.reference = "in_step"
  c.reference_logps_file = ""  # '' = WORKDIR/reference_logps.npz (written by the first pass)
  return c
