"""The arithmetic preference pairs and the reward_model_tiny / dpo_tiny configs from the CLI."""

import json
import os
import pathlib
import random
import subprocess
import sys

from llm_jax.data import arithmetic_preferences

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_wrong_answers_are_near_misses_and_never_correct():
  rng = random.Random(0)
  for answer in ["0", "7", "19", "-12", "98", "100", "11"]:
    for _ in range(50):
      wrong = arithmetic_preferences.wrong_answer(answer, rng)
      assert wrong != answer and abs(int(wrong) - int(answer)) <= 90


def test_pairs_come_from_disjoint_train_and_held_out_problems(tmp_path):
  root = arithmetic_preferences.cached_path("preferences/train", str(tmp_path), "data.train_files")
  rows = {split: [json.loads(l) for l in open(os.path.join(os.path.dirname(root), f"{split}.jsonl"))]
          for split in ("train", "validation")}
  assert len(rows["train"]) == arithmetic_preferences.TRAIN_PAIRS
  assert len(rows["validation"]) == arithmetic_preferences.VALIDATION_PAIRS
  assert not {r["prompt"] for r in rows["train"]} & {r["prompt"] for r in rows["validation"]}
  for row in rows["train"][:200]:
    a, op, b = row["prompt"][0:-1].partition("+") if "+" in row["prompt"] else \
        row["prompt"][0:-1].rpartition("-")
    assert row["chosen"] == str(int(a) + int(b) if op == "+" else int(a) - int(b))
    assert row["rejected"] != row["chosen"]


def test_dpo_and_reward_model_configs_run_from_the_cli(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  common = ["--config.train.steps=4", "--config.train.eval_every=4", "--config.train.eval_batches=1",
            "--config.train.log_every=1", "--config.train.progress_bar=False",
            f"--config.data.data_dir={tmp_path / 'data'}"]
  for name, extra in (("dpo_tiny", []), ("reward_model_tiny", [])):
    workdir = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "llm_jax.train", f"--config={REPO / 'configs' / f'{name}.py'}",
         f"--workdir={workdir}", *common, *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "reward_margin" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert any("eval_accuracy" in r for r in rows)
