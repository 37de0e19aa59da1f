"""Multiple-choice log-likelihoods, acc and acc_norm of a converted random GPT-2 against
lm-evaluation-harness' Hugging Face backend on the same YAML task (read by both)."""

import json
import os

import numpy as np
import pytest

from harness_helpers import WORDS, save_random_gpt2, word_choice_docs, write_jsonl
from llm_jax import evaluate
from llm_jax.evaluation import harness
from llm_jax.evaluation import load

pytestmark = pytest.mark.hf

TOLERANCE = 1e-4
TASK_YAML = """task: words_mc
dataset_path: json
dataset_kwargs:
  data_files: {{test: {test}, train: {train}}}
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
"""


@pytest.fixture(scope="module")
def both(tmp_path_factory):
  """Our results and lm-eval's on a generated task; two items overflow the 32-token context."""
  os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
  import lm_eval  # pylint: disable=g-import-not-at-top
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("lm_eval_parity")
  torch_model, fast_tokenizer = save_random_gpt2(str(root / "gpt2"), n_positions=32)
  docs = word_choice_docs(24, seed=0)
  for doc in docs[:2]:  # longer than the model's context: both sides cut from the left
    doc["context"] = " ".join(WORDS[1 + (i % 60)] for i in range(40))
  test = write_jsonl(root / "test.jsonl", docs)
  train = write_jsonl(root / "train.jsonl", word_choice_docs(8, seed=1))
  (root / "tasks").mkdir()
  task_path = root / "tasks" / "words_mc.yaml"
  task_path.write_text(TASK_YAML.format(test=test, train=train))

  theirs = lm_eval.simple_evaluate(
      model=HFLM(pretrained=torch_model, tokenizer=fast_tokenizer, batch_size=16, device="cpu"),
      tasks=["words_mc"], num_fewshot=0, log_samples=True,
      task_manager=TaskManager(include_path=str(root / "tasks"), include_defaults=False))
  model, params, model_cfg, tokenizer = load.load_from_hf(str(root / "gpt2"))
  ours = harness.run_task(harness.get_task(str(task_path)), model, params, model_cfg, tokenizer,
                          harness.HarnessOptions(num_fewshot=0, batch_size=8))
  return ours, theirs, root


def test_log_likelihood_of_every_choice_matches_lm_eval(both):
  ours, theirs, _ = both
  their_lls = {}
  for sample in theirs["samples"]["words_mc"]:
    their_lls[sample["doc_id"]] = [r[0][0] for r in sample["resps"]]
  assert len(their_lls) == len(ours["records"]) == 24
  diffs = [np.max(np.abs(np.asarray(record["log_likelihoods"]) - their_lls[i]))
           for i, record in enumerate(ours["records"])]
  print(f"\n[parity] lm-eval log-likelihood per choice: max abs diff {max(diffs):.3e}")
  assert max(diffs) <= TOLERANCE
  assert ours["truncated"] >= 2  # the two long contexts, counted


def test_acc_and_acc_norm_match_lm_eval(both):
  ours, theirs, _ = both
  found = theirs["results"]["words_mc"]
  assert ours["metrics"]["acc"] == pytest.approx(found["acc,none"], abs=1e-12)
  assert ours["metrics"]["acc_norm"] == pytest.approx(found["acc_norm,none"], abs=1e-12)
  assert ours["stderr"]["acc"] == pytest.approx(found["acc_stderr,none"], rel=1e-9)
  per_item = {s["doc_id"]: (s["acc"], s["acc_norm"]) for s in theirs["samples"]["words_mc"]}
  for i, record in enumerate(ours["records"]):
    assert (float(record["pred_acc"] == record["gold"]),
            float(record["pred_acc_norm"] == record["gold"])) == per_item[i]


def test_cli_on_a_hf_folder_writes_lm_eval_numbers(both, tmp_path):
  _, theirs, root = both
  evaluate.FLAGS.unparse_flags()
  evaluate.FLAGS(["evaluate", f"--hf={root / 'gpt2'}", f"--tasks={root / 'tasks' / 'words_mc.yaml'}",
                  "--noefficiency", f"--out={tmp_path}"])
  try:
    assert evaluate.main(["evaluate"]) == 0
  finally:
    evaluate.FLAGS.unparse_flags()
  [run] = json.loads((tmp_path / "results.json").read_text())["runs"]
  assert run["tasks"]["words_mc"]["metrics"]["acc_norm"] == pytest.approx(
      theirs["results"]["words_mc"]["acc_norm,none"])
  assert "| 0 | words_mc | acc_norm |" in (tmp_path / "results.md").read_text()
