r"""Retrieval-augmented answering: embed a collection, retrieve top-k passages per question, and
answer with and without them in the prompt.

  PYTHONPATH=. python experiments/rag.py --quick --out=experiments/results/rag
  PYTHONPATH=. python experiments/rag.py --collection=stdlib --embed_hf=ST_FOLDER \
      --workdir=workdirs/gpt_tiny --num_questions=200 --k=4 --out=experiments/results/rag

Collection: the standard-library docstrings of the embedded corpus (a passage per documented
function, titled by its qualified name), or a folder of .txt files (a passage per paragraph,
titled by the file name). Questions are generated from the collection: "Which entry says:
'<a span of words of one passage>'?", answered by the passage's title. Index: faiss-cpu
(inner product of L2-normalised embeddings) when importable, else exact NumPy search. Metrics:
recall@1..k of the question's passage; answer accuracy by log-likelihood over four candidate
titles (the right one and three others), with the top-k passages in the prompt and without.
Without --embed_hf / --workdir / --hf the models are tiny random byte-level ones (--quick):
the numbers then test the plumbing, and retrieval works from the lexical overlap alone.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llm_jax import embed as embed_lib  # pylint: disable=wrong-import-position
from llm_jax.evaluation.harness import loglikelihood  # pylint: disable=wrong-import-position
from llm_jax.evaluation.harness import report  # pylint: disable=wrong-import-position


def stdlib_passages(max_files: int | None) -> list[tuple[str, str]]:
  from llm_jax.data import stdlib_tasks  # pylint: disable=g-import-not-at-top
  from llm_jax.data import text_files  # pylint: disable=g-import-not-at-top
  root, paths = text_files.stdlib_files()
  functions = stdlib_tasks.stdlib_functions(root, tuple(paths[:max_files] if max_files else paths))
  seen, passages = set(), []
  for f in functions:
    text = " ".join(f.docstring.split("\n\n")[0].split())
    if len(text.split()) >= 6 and f.qualname not in seen and not f.name.startswith("_"):
      seen.add(f.qualname)
      passages.append((f.qualname, text))
  return passages


def folder_passages(folder: str) -> list[tuple[str, str]]:
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--collection={folder!r} is neither 'stdlib' nor a folder")
  passages = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".txt"):
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        for paragraph in f.read().split("\n\n"):
          if paragraph.strip():
            passages.append((os.path.splitext(name)[0], " ".join(paragraph.split())))
  if not passages:
    raise ValueError(f"--collection={folder!r} holds no .txt passages")
  return passages


def make_questions(passages, num: int, span: int, seed: int) -> list[dict]:
  """Questions quoting `span` words of a passage; the answer is its title."""
  rng = np.random.default_rng(seed)
  titles = sorted({t for t, _ in passages})
  questions = []
  for index in rng.permutation(len(passages))[:num]:
    title, text = passages[int(index)]
    words = text.split()
    start = int(rng.integers(0, max(1, len(words) - span + 1)))
    others = [t for t in rng.permutation(titles)[:4] if t != title][:3]
    questions.append({"passage": int(index), "answer": title,
                      "question": f"Which entry says: '{' '.join(words[start:start + span])}'?",
                      "candidates": [title] + others})
  return questions


class VectorIndex:
  """Inner-product search over L2-normalised vectors: faiss when importable, else NumPy."""

  def __init__(self, vectors: np.ndarray, use_faiss: bool = True):
    self.vectors = np.ascontiguousarray(vectors, np.float32)
    self.faiss_index = None
    if use_faiss:
      try:
        import faiss  # pylint: disable=g-import-not-at-top
        self.faiss_index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.faiss_index.add(self.vectors)
      except ImportError:
        pass
    self.backend = "faiss" if self.faiss_index is not None else "numpy"

  def search(self, queries: np.ndarray, k: int) -> np.ndarray:
    queries = np.ascontiguousarray(queries, np.float32)
    if self.faiss_index is not None:
      return self.faiss_index.search(queries, k)[1]
    scores = queries @ self.vectors.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def retrieve(model, params, tokenizer, passages, queries, k: int, *, pooling="mean",
             use_faiss=True, batch_size=32):
  """(top-k passage indices per query [Q, k], index backend)."""
  texts = [f"{title}: {text}" for title, text in passages]
  index = VectorIndex(embed_lib.embed(model, params, texts, tokenizer=tokenizer, pooling=pooling,
                                      batch_size=batch_size, progress=True), use_faiss)
  query_vectors = embed_lib.embed(model, params, list(queries), tokenizer=tokenizer,
                                  pooling=pooling, batch_size=batch_size)
  return index.search(query_vectors, k), index.backend


def recall_at(top_k: np.ndarray, gold: np.ndarray) -> dict[str, float]:
  return {f"recall@{j}": float(np.mean([g in row[:j] for row, g in zip(top_k, gold)]))
          for j in range(1, top_k.shape[1] + 1)}


def answer_accuracy(scorer, questions, contexts) -> float:
  right = []
  for question, context in zip(questions, contexts):
    lls = scorer.loglikelihoods([(context, " " + c) for c in question["candidates"]])
    right.append(int(np.argmax(lls)) == 0)
  return float(np.mean(right))


def _models(args):
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  if args.embed_hf:
    embedder = load.load_from_hf(args.embed_hf)
  else:
    embedder = _tiny_random("encoder", seed=0)
  if args.hf:
    reader = load.load_from_hf(args.hf)
  elif args.workdir:
    model, params, cfg, tokenizer = load.load_from_workdir(args.workdir)
    reader = (model, params, cfg.model, tokenizer)
  else:
    reader = _tiny_random("decoder", seed=1, max_len=512)
  return embedder, reader


def _tiny_random(family: str, seed: int, max_len: int = 128):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from llm_jax import models  # pylint: disable=g-import-not-at-top
  from llm_jax.data.byte_tokenizer import ByteTokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = ByteTokenizer(num_sentinels=0)
  cfg = models.default_model_config()
  cfg.update(family=family, vocab_size=tokenizer.vocab_size, d_model=32, num_layers=1,
             num_heads=2, d_ff=64, max_len=max_len, dropout_rate=0.0,
             attention_dropout_rate=0.0, position="sinusoidal")
  if family == "encoder":
    cfg.mlm_head = False
  model = models.build_model(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), jax.numpy.ones((1, 4), jax.numpy.int32))["params"])
  return model, params, cfg, tokenizer


def run(args) -> dict:
  start = time.perf_counter()
  passages = (stdlib_passages(args.max_files) if args.collection == "stdlib"
              else folder_passages(args.collection))
  passages = passages[:args.max_passages] if args.max_passages else passages
  questions = make_questions(passages, args.num_questions, args.span, args.seed)
  (e_model, e_params, _, e_tok), (r_model, r_params, r_cfg, r_tok) = _models(args)
  top_k, backend = retrieve(e_model, e_params, e_tok, passages, [q["question"] for q in questions],
                            args.k, use_faiss=not args.no_faiss)
  recall = recall_at(top_k, np.asarray([q["passage"] for q in questions]))
  scorer = loglikelihood.LoglikelihoodScorer(r_model, r_params, r_cfg, r_tok, batch_size=8)
  without = [f"Question: {q['question']}\nAnswer:" for q in questions]
  with_passages = ["\n".join(f"{passages[j][0]}: {passages[j][1]}" for j in row) + "\n" + w
                   for row, w in zip(top_k, without)]
  results = {
      "collection": args.collection, "passages": len(passages), "questions": len(questions),
      "k": args.k, "index": backend, **recall,
      "answer_acc_without_retrieval": answer_accuracy(scorer, questions, without),
      "answer_acc_with_retrieval": answer_accuracy(scorer, questions, with_passages),
      "truncated_prompts": scorer.truncated, "chance": 0.25,
      "embedder": args.embed_hf or "tiny random byte encoder",
      "reader": args.hf or args.workdir or "tiny random byte decoder",
      "seconds": time.perf_counter() - start}
  return results


def write_outputs(results: dict, out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  report.write_atomically(os.path.join(out, "rag_results.json"), json.dumps(results, indent=2) + "\n")
  rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
          for k, v in results.items()]
  report.write_atomically(os.path.join(out, "rag_results.md"),
                          "| quantity | value |\n|---|---:|\n" + "\n".join(rows) + "\n")
  ks = [int(k.split("@")[1]) for k in results if k.startswith("recall@")]
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
  left.plot(ks, [results[f"recall@{j}"] for j in ks], marker="o")
  left.set(xlabel="k", ylabel="recall@k", title=f"retrieval ({results['index']})", ylim=(0, 1.05))
  right.bar(["without", "with"], [results["answer_acc_without_retrieval"],
                                  results["answer_acc_with_retrieval"]])
  right.axhline(results["chance"], color="gray", linestyle="--", label="chance")
  right.set(ylabel="answer accuracy", title="answering", ylim=(0, 1.05))
  right.legend()
  fig.tight_layout()
  tmp = os.path.join(out, ".tmp_rag.png")
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, os.path.join(out, "rag.png"))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--collection", default="stdlib", help="'stdlib' or a folder of .txt files")
  parser.add_argument("--embed_hf", default=None, help="embedding model folder (HF / ST)")
  parser.add_argument("--hf", default=None, help="answering model: HF folder")
  parser.add_argument("--workdir", default=None, help="answering model: training workdir")
  parser.add_argument("--num_questions", type=int, default=200)
  parser.add_argument("--span", type=int, default=6, help="words quoted per question")
  parser.add_argument("--k", type=int, default=4)
  parser.add_argument("--max_files", type=int, default=None, help="stdlib files to read")
  parser.add_argument("--max_passages", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_faiss", action="store_true", help="exact NumPy search")
  parser.add_argument("--quick", action="store_true", help="small collection, few questions")
  parser.add_argument("--out", default="experiments/results/rag")
  args = parser.parse_args(argv)
  if args.quick:
    args.max_files, args.max_passages = args.max_files or 12, args.max_passages or 64
    args.num_questions = min(args.num_questions, 16)
  if args.hf and args.workdir:
    parser.error("give at most one of --hf and --workdir")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  results = run(args)
  write_outputs(results, args.out)
  for key, value in results.items():
    print(f"{key:>30}  {value}")
  print(f"wrote {args.out}/rag_results.json, rag_results.md, rag.png")
  return results


if __name__ == "__main__":
  main()
