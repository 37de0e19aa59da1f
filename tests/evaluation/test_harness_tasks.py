"""Harness core on a tiny random byte-level decoder: k-shot prompts, acc / acc_norm, rolling
windows, generation, truncation, task files, benchmark readers and bad input."""

import textwrap

import numpy as np
import pytest

from harness_helpers import tiny_byte_decoder, write_jsonl
from llm_jax import decoding
from llm_jax.evaluation import scoring
from llm_jax.evaluation import harness
from llm_jax.evaluation.harness import efficiency
from llm_jax.evaluation.harness import fewshot
from llm_jax.evaluation.harness import generation
from llm_jax.evaluation.harness import multiple_choice
from llm_jax.evaluation.harness import readers
from llm_jax.evaluation.harness import task_file
from llm_jax.evaluation.harness.task import Task, TaskError


@pytest.fixture(scope="module")
def tiny():
  return tiny_byte_decoder(max_len=64)


def _docs(n):
  return [{"question": f"q{i}?", "choices": [f"a{i}", f"bb{i}"], "label": i % 2,
           "_where": f"d{i}"} for i in range(n)]


def _task(**overrides):
  fields = dict(name="toy", output_type="multiple_choice", docs=lambda split: _docs(12),
                doc_to_text="{{question}}", doc_to_choice="{{choices}}",
                doc_to_target="{{label}}", fewshot_split="test")
  return Task(**{**fields, **overrides})


def test_fewshot_prompts_are_seeded_and_never_hold_the_item():
  task = _task()
  docs = task.docs("test")
  contexts = [fewshot.build_context(task, d, i, 3, seed=7, fewshot_docs=docs)
              for i, d in enumerate(docs)]
  again = [fewshot.build_context(task, d, i, 3, seed=7, fewshot_docs=docs)
           for i, d in enumerate(docs)]
  other_seed = [fewshot.build_context(task, d, i, 3, seed=8, fewshot_docs=docs)
                for i, d in enumerate(docs)]
  assert contexts == again and contexts != other_seed
  for doc, context in zip(docs, contexts):
    examples = context.split("\n\n")
    assert len(examples) == 4 and examples[-1] == doc["question"]
    assert all(not e.startswith(doc["question"]) for e in examples[:-1])
  # One item's examples do not depend on which other items are evaluated.
  assert fewshot.build_context(task, docs[5], 5, 3, 7, docs) == contexts[5]
  with pytest.raises(TaskError, match="11 usable"):
    fewshot.build_context(task, docs[0], 0, 12, 7, docs)


def test_acc_norm_divides_by_the_choice_length_in_characters():
  # Raw: choice 0 wins; per character: -4/4 > -3/1, choice 1 wins; bytes: é is 2 bytes.
  assert multiple_choice.choice_predictions([-3.0, -4.0], ["a", "bbbb"]) == {
      "acc": 0, "acc_norm": 1, "acc_bytes": 1}
  picked = multiple_choice.choice_predictions([-2.0, -2.9], ["éé", "abc"])
  assert (picked["acc_norm"], picked["acc_bytes"]) == (1, 0)


def test_multiple_choice_scores_are_the_continuation_log_likelihoods(tiny):
  model, params, cfg, tokenizer = tiny
  result = harness.run_task(_task(), model, params, cfg, tokenizer,
                            harness.HarnessOptions(num_fewshot=2, limit=4))
  record = result["records"][1]
  context_ids = tokenizer.encode(record["context"])
  for choice, ll in zip(record["choices"], record["log_likelihoods"]):
    choice_ids = tokenizer.encode(" " + choice)
    [score] = scoring.sequence_log_likelihoods(model, params, [context_ids + choice_ids],
                                               family="decoder")
    assert ll == pytest.approx(float(np.sum(score.token_log_probs[-len(choice_ids):])), abs=1e-5)
  accuracy = np.mean([r["pred_acc"] == r["gold"] for r in result["records"]])
  assert result["metrics"]["acc"] == pytest.approx(accuracy)
  assert result["truncated"] == 0


def test_long_context_is_cut_from_the_left_and_counted(tiny):
  model, params, cfg, tokenizer = tiny
  long_docs = [{"question": "x" * 100, "choices": ["a", "b"], "label": 0}]
  result = harness.run_task(_task(docs=lambda split: long_docs), model, params, cfg, tokenizer,
                            harness.HarnessOptions())
  assert result["truncated"] == 2 and "2 request(s)" in result["warnings"][0]
  row = (tokenizer.encode("x" * 100) + tokenizer.encode(" a"))[-(cfg.max_len + 1):]
  [score] = scoring.sequence_log_likelihoods(model, params, [row], family="decoder")
  expected = float(np.sum(score.token_log_probs[-2:]))
  assert result["records"][0]["log_likelihoods"][0] == pytest.approx(expected, abs=1e-5)


def test_rolling_windows_predict_every_token_once_within_the_context():
  tokens = list(range(100, 237))
  windows = harness.rolling_windows(tokens, prefix_token=1, max_length=32)
  predicted = [t for _, continuation in windows for t in continuation]
  assert predicted == tokens
  for context, continuation in windows:
    assert len(context) + len(continuation) - 1 <= 32 and context
  # lm-eval's disjoint windows: the prefix token, then one token of context per later window.
  assert windows[0] == ([1], tokens[:32]) and windows[1] == ([tokens[31]], tokens[32:64])


def test_rolling_perplexity_equals_the_windows_scored_directly(tiny):
  model, params, cfg, tokenizer = tiny
  task = harness.get_task("counting_perplexity")
  result = harness.run_task(task, model, params, cfg, tokenizer, harness.HarnessOptions(limit=2))
  texts = [task.target_text(d) for d in task.docs("test")[:2]]
  windows = [w for text in texts
             for w in harness.rolling_windows(tokenizer.encode(text), 2, cfg.max_len)]
  assert len(windows) > len(texts)  # the documents span several windows
  scores = scoring.sequence_log_likelihoods(model, params, [c + x for c, x in windows],
                                            family="decoder", batch_size=len(windows))
  total = sum(float(np.sum(s.token_log_probs[-len(x):])) for s, (_, x) in zip(scores, windows))
  num_bytes = sum(len(t.encode()) for t in texts)
  words = sum(len(t.split()) for t in texts)
  assert result["metrics"]["byte_perplexity"] == pytest.approx(np.exp(-total / num_bytes), rel=1e-5)
  assert result["metrics"]["word_perplexity"] == pytest.approx(np.exp(-total / words), rel=1e-5)
  assert result["metrics"]["bits_per_byte"] == pytest.approx(-total / num_bytes / np.log(2), rel=1e-5)


def test_stop_sequences_and_answer_extraction():
  assert generation.cut_at_stop("12 apples\nQuestion: x", ("Question:", "\n")) == "12 apples"
  assert generation.extract_answer("so #### -1,234.", r"#### (\-?[0-9.,]+)") == "-1,234."
  assert generation.extract_answer("no number", r"(\d+)") == ""
  assert generation.extract_answer("  7 \n", None) == "7"


def test_generation_task_uses_the_greedy_decoder_output(tiny):
  model, params, cfg, tokenizer = tiny
  task = harness.get_task("arithmetic_gen")
  result = harness.run_task(task, model, params, cfg, tokenizer,
                            harness.HarnessOptions(limit=1))
  record = result["records"][0]
  prompt = tokenizer.encode(record["context"])
  tokens = np.asarray(decoding.generate(model, params, [prompt], max_new_tokens=8,
                                        eos_id=tokenizer.specials.eos_id).tokens)[0].tolist()
  if tokenizer.specials.eos_id in tokens:
    tokens = tokens[:tokens.index(tokenizer.specials.eos_id)]
  assert record["output"] == generation.cut_at_stop(tokenizer.decode(tokens), ("\n",))
  assert record["reference"] == task.docs("test")[0]["answer"]
  matches = [generation.extract_answer(r["output"], r"(-?\d+)") == r["reference"]
             for r in result["records"]]
  assert result["metrics"]["exact_match"] == pytest.approx(np.mean(matches))


def test_unknown_task_and_single_choice_are_clear_errors(tiny):
  with pytest.raises(TaskError, match="unknown task 'nope'.*arithmetic_mc"):
    harness.get_task("nope")
  model, params, cfg, tokenizer = tiny
  one_choice = [{"question": "q", "choices": ["only"], "label": 0, "_where": "f.jsonl:3"}]
  with pytest.raises(TaskError, match="f.jsonl:3 has 1 choice"):
    harness.run_task(_task(docs=lambda split: one_choice), model, params, cfg, tokenizer,
                     harness.HarnessOptions())


def test_task_file_with_a_missing_field_names_file_and_field(tmp_path):
  path = tmp_path / "broken.yaml"
  path.write_text("task: broken\noutput_type: multiple_choice\ndata_files: {test: t.jsonl}\n"
                  "doc_to_text: '{{q}}'\ndoc_to_target: '{{label}}'\n")
  with pytest.raises(TaskError, match=f"{path}: missing field 'doc_to_choice'"):
    task_file.load_task_file(str(path))
  path.write_text("task: broken\noutput_type: multiple_choice\ndoc_to_text: x\n"
                  "doc_to_choice: [a, b]\ndoc_to_target: 0\n")
  with pytest.raises(TaskError, match="missing field 'data_files'"):
    task_file.load_task_file(str(path))
  path.write_text("task: t\noutput_type: multiple_choice\ndoc_to_choise: [a]\n")
  with pytest.raises(TaskError, match="unknown field.*doc_to_choise"):
    task_file.load_task_file(str(path))


def test_benchmark_formats_read_from_local_files(tmp_path, tiny):
  (tmp_path / "mmlu.csv").write_text('"What is 1+1?",1,2,3,4,B\nWhy?,a,b,c,d,D\n')
  mmlu = readers.read_mmlu_csv(str(tmp_path / "mmlu.csv"))
  assert mmlu[0]["choices"] == ["1", "2", "3", "4"] and [d["answer"] for d in mmlu] == [1, 3]
  write_jsonl(tmp_path / "hs.jsonl", [{"ctx_a": "A man sits.", "ctx_b": "he [title] stands",
                                       "activity_label": "Sitting", "endings": ["up.", "down."],
                                       "label": "1"}])
  [hs] = readers.read_hellaswag_jsonl(str(tmp_path / "hs.jsonl"))
  assert hs["query"] == "Sitting: A man sits. He. stands" and hs["gold"] == 1
  write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2 + 2?", "answer": "2 and 2.\n#### 4"}])
  (tmp_path / "gsm.yaml").write_text(textwrap.dedent("""\
      task: gsm_local
      output_type: generate_until
      data_files: {test: gsm.jsonl, train: gsm.jsonl}
      format: gsm8k_jsonl
      doc_to_text: "Question: {{question}}\\nAnswer:"
      doc_to_target: "{{answer}}"
      answer_regex: "#### (\\\\-?[0-9.,]+)"
      generation_kwargs: {until: ["Question:"], max_gen_toks: 4}
      """))
  task = harness.get_task(str(tmp_path / "gsm.yaml"))
  model, params, cfg, tokenizer = tiny
  result = harness.run_task(task, model, params, cfg, tokenizer, harness.HarnessOptions())
  assert result["records"][0]["reference"] == "4" and task.until == ("Question:",)
  with pytest.raises(ValueError, match="mmlu.csv:1: answer 'E'"):
    (tmp_path / "mmlu.csv").write_text("q,1,2,3,4,E\n")
    readers.read_mmlu_csv(str(tmp_path / "mmlu.csv"))


def test_efficiency_reports_throughput_and_peak_memory(tiny):
  model, params, cfg, _ = tiny
  found = efficiency.measure_efficiency(model, params, cfg, batch_size=2, prompt_length=8,
                                        new_tokens=3, repeats=1)
  assert found["prefill_tokens_per_s"] > 0 and found["decode_tokens_per_s"] > 0
  assert found["efficiency_prompt_length"] == 8 and found["peak_memory_bytes"] > 2**20
