"""experiments/rag.py: retrieval finds a planted passage; --quick writes its table and plot."""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from experiments import rag  # pylint: disable=wrong-import-position

WORDS = ("apple river stone cloud maple tiger copper violin garden lantern pepper ocean "
         "silver forest candle rocket mirror castle desert marble").split()


def _collection(folder, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(folder)
  for f in range(4):
    paragraphs = [" ".join(rng.choice(WORDS, 8)) for _ in range(6)]
    (folder / f"file{f}.txt").write_text("\n\n".join(paragraphs) + "\n")
  planted = "zebra quartz nebula plankton saxophone volcano"
  (folder / "planted.txt").write_text(planted + "\n")
  return planted


def test_retrieval_finds_the_planted_passage(tmp_path):
  planted = _collection(tmp_path / "docs")
  passages = rag.folder_passages(str(tmp_path / "docs"))
  model, params, _, tokenizer = rag._tiny_random("encoder", seed=0)  # pylint: disable=protected-access
  queries = ["Which entry says: 'quartz nebula plankton saxophone'?", "zebra volcano"]
  for use_faiss in (True, False):
    top_k, _ = rag.retrieve(model, params, tokenizer, passages, queries, 3, use_faiss=use_faiss)
    assert all(passages[row[0]] == ("planted", planted) for row in top_k)
  index = rag.VectorIndex(np.eye(3, dtype=np.float32), use_faiss=False)
  assert index.search(np.asarray([[0.1, 0.9, 0.2]], np.float32), 2).tolist() == [[1, 2]]


def test_quick_run_writes_table_and_plot_with_and_without_retrieval(tmp_path):
  _collection(tmp_path / "docs")
  out = tmp_path / "out"
  results = rag.main(["--quick", f"--collection={tmp_path / 'docs'}", "--num_questions=8",
                      "--k=2", f"--out={out}"])
  assert json.loads((out / "rag_results.json").read_text()) == results
  assert results["questions"] == 8 and results["passages"] == 25
  assert 0 <= results["recall@1"] <= results["recall@2"] <= 1
  assert {"answer_acc_with_retrieval", "answer_acc_without_retrieval"} <= results.keys()
  assert "| recall@2 |" in (out / "rag_results.md").read_text()
  assert (out / "rag.png").read_bytes()[:4] == b"\x89PNG"
