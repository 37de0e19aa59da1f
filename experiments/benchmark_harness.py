r"""Harness and embedding throughput against lm-evaluation-harness and sentence-transformers,
side by side in one run on the same random models and items (CPU).

  PYTHONPATH=. python experiments/benchmark_harness.py [--quick] [--items=400] [--sentences=2000]
      [--out=experiments/results/benchmark_harness]

Harness: a multiple-choice task of random-word items (2-4 choices) on a random GPT-2; ours is
`harness.run_task` on the converted model, theirs `HFLM.loglikelihood` on the same (context,
continuation) requests; items/s, both warmed up first (our compile time is reported apart).
Embeddings: a random BERT sentence-transformers folder (mean pooling, normalised); ours is
`llm_jax.embed`, theirs `SentenceTransformer.encode`, same batch size; sentences/s.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llm_jax  # pylint: disable=wrong-import-position
from llm_jax.evaluation import harness  # pylint: disable=wrong-import-position
from llm_jax.evaluation import load  # pylint: disable=wrong-import-position
from llm_jax.evaluation.harness import report  # pylint: disable=wrong-import-position

GPT_WORDS = ["<|endoftext|>"] + [f"w{i}" for i in range(255)]
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(251)]


def _word_tokenizer(folder, words, bert):
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                         unk_token=words[1] if bert else words[0]))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  if bert:
    tok.post_processor = tokenizers.processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                pad_token="[PAD]", cls_token="[CLS]",
                                                sep_token="[SEP]", mask_token="[MASK]")
  else:
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=words[0],
                                                eos_token=words[0], unk_token=words[0])
  fast.save_pretrained(folder)
  tok.save(os.path.join(folder, "tokenizer.json"))
  return fast


def _docs(num, seed):
  rng = np.random.default_rng(seed)
  words = GPT_WORDS[1:]
  return [{"context": " ".join(rng.choice(words, int(rng.integers(8, 40)))),
           "choices": [" ".join(rng.choice(words, int(rng.integers(1, 6))))
                       for _ in range(int(rng.integers(2, 5)))], "label": 0} for _ in range(num)]


def bench_harness(folder, num_items, d_model, batch_size):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from lm_eval.api.instance import Instance  # pylint: disable=g-import-not-at-top
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.GPT2Config(vocab_size=len(GPT_WORDS), n_positions=128, n_embd=d_model,
                                   n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
  torch_model = transformers.GPT2LMHeadModel(config).eval()
  torch_model.save_pretrained(folder)
  fast = _word_tokenizer(folder, GPT_WORDS, bert=False)
  docs = _docs(num_items, 0)
  task = harness.Task(name="bench_mc", output_type="multiple_choice", docs=lambda split: docs,
                      doc_to_text="{{context}}", doc_to_choice="{{choices}}",
                      doc_to_target="{{label}}", fewshot_split=None)
  model, params, model_cfg, tokenizer = load.load_from_hf(folder)
  options = harness.HarnessOptions(batch_size=batch_size, keep_records=False)
  start = time.perf_counter()
  harness.run_task(task, model, params, model_cfg, tokenizer, options)  # compiles
  warm_up = time.perf_counter() - start
  ours = harness.run_task(task, model, params, model_cfg, tokenizer, options)

  lm = HFLM(pretrained=torch_model, tokenizer=fast, batch_size=batch_size, device="cpu")
  requests = [Instance(request_type="loglikelihood", doc=d, arguments=(d["context"], " " + c),
                       idx=j) for d in docs for j, c in enumerate(d["choices"])]
  lm.loglikelihood(requests[:batch_size], disable_tqdm=True)
  start = time.perf_counter()
  lm.loglikelihood(requests, disable_tqdm=True)
  theirs_seconds = time.perf_counter() - start
  return {"items": num_items, "requests": len(requests), "d_model": d_model,
          "ours_items_per_s": num_items / ours["seconds"],
          "lm_eval_items_per_s": num_items / theirs_seconds,
          "harness_ratio": theirs_seconds / ours["seconds"], "ours_compile_s": warm_up}


def bench_embeddings(folder, num_sentences, d_model, batch_size):
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=len(BERT_WORDS), hidden_size=d_model,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=4 * d_model, max_position_embeddings=128)
  transformers.BertModel(config).eval().save_pretrained(folder)
  _word_tokenizer(folder, BERT_WORDS, bert=True)
  modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
  with open(os.path.join(folder, "modules.json"), "w") as f:
    json.dump([{"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
               for i, (p, t) in enumerate(modules)], f)
  for path in ("1_Pooling", "2_Normalize"):
    os.makedirs(os.path.join(folder, path))
  with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
    json.dump({"word_embedding_dimension": d_model, "pooling_mode": "mean"}, f)
  rng = np.random.default_rng(1)
  texts = [" ".join(rng.choice(BERT_WORDS[5:], int(rng.integers(4, 60))))
           for _ in range(num_sentences)]
  model, params, tokenizer, settings = llm_jax.embed.load_embedder(folder)
  embed = lambda: llm_jax.embed(model, params, texts, tokenizer=tokenizer,
                                pooling=settings["pooling"], normalize=settings["normalize"],
                                batch_size=batch_size)
  start = time.perf_counter()
  ours_vectors = embed()  # compiles
  warm_up = time.perf_counter() - start
  start = time.perf_counter()
  embed()
  ours_seconds = time.perf_counter() - start
  st = sentence_transformers.SentenceTransformer(folder, device="cpu")
  st.encode(texts[:batch_size], batch_size=batch_size)
  start = time.perf_counter()
  theirs_vectors = st.encode(texts, batch_size=batch_size)
  theirs_seconds = time.perf_counter() - start
  return {"sentences": num_sentences, "embed_d_model": d_model,
          "ours_sentences_per_s": num_sentences / ours_seconds,
          "st_sentences_per_s": num_sentences / theirs_seconds,
          "embedding_ratio": theirs_seconds / ours_seconds, "embed_compile_s": warm_up,
          "embedding_max_abs_diff": float(np.max(np.abs(ours_vectors - theirs_vectors)))}


def write_outputs(results, out):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  report.write_atomically(os.path.join(out, "benchmark_harness.json"),
                          json.dumps(results, indent=2) + "\n")
  table = ("| benchmark | llm_jax | reference | ratio |\n|---|---:|---:|---:|\n"
           f"| harness items/s (vs lm-eval HF) | {results['ours_items_per_s']:.1f} | "
           f"{results['lm_eval_items_per_s']:.1f} | {results['harness_ratio']:.2f}x |\n"
           f"| embedding sentences/s (vs sentence-transformers) | "
           f"{results['ours_sentences_per_s']:.1f} | {results['st_sentences_per_s']:.1f} | "
           f"{results['embedding_ratio']:.2f}x |\n")
  report.write_atomically(os.path.join(out, "benchmark_harness.md"), table)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.bar(["harness\n(items/s)", "embeddings\n(sentences/s)"],
         [results["harness_ratio"], results["embedding_ratio"]])
  ax.axhline(1.0, color="gray", linestyle="--")
  ax.set_ylabel("llm_jax / reference throughput")
  fig.tight_layout()
  tmp = os.path.join(out, ".tmp_benchmark_harness.png")
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, os.path.join(out, "benchmark_harness.png"))
  return table


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--items", type=int, default=400)
  parser.add_argument("--sentences", type=int, default=2000)
  parser.add_argument("--d_model", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--quick", action="store_true", help="few items, for a smoke test")
  parser.add_argument("--out", default="experiments/results/benchmark_harness")
  args = parser.parse_args(argv)
  if args.quick:
    args.items, args.sentences, args.d_model, args.batch_size = 24, 64, 32, 16
  with tempfile.TemporaryDirectory() as tmp:
    results = {**bench_harness(os.path.join(tmp, "gpt2"), args.items, args.d_model,
                               args.batch_size),
               **bench_embeddings(os.path.join(tmp, "bert"), args.sentences, args.d_model,
                                  args.batch_size),
               "batch_size": args.batch_size, "quick": args.quick}
  print(write_outputs(results, args.out))
  return results


if __name__ == "__main__":
  main()
