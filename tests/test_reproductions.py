"""The paper reproductions: their protocols (default suite) and --quick modes (slow).

The --quick modes train 8 small runs in all, a few minutes of CPU: they run in one subprocess
(one device, as a user runs them; imports paid once) with a fresh data dir, marked slow; each
slow test then checks one experiment's outputs. The protocol tests run without training.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import bert_masking  # pylint: disable=g-import-not-at-top,wrong-import-position
import nanogpt_shakespeare  # pylint: disable=g-import-not-at-top,wrong-import-position
import scaling_laws  # pylint: disable=g-import-not-at-top,wrong-import-position
import t5_objectives  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_nanogpt_recipe_split_and_vocabulary(tmp_path):
  text = "".join(f"ROMEO {i}:\nWhat light through yonder window breaks? {i % 7}\n\n" for i in range(200))
  train, val = nanogpt_shakespeare.write_splits(text, str(tmp_path / "text"))
  cfg = nanogpt_shakespeare.recipe_config(train, val, str(tmp_path / "data"))
  checked = nanogpt_shakespeare.check_protocol(cfg, text, train, val)
  assert checked["train_chars"] == int(0.9 * len(text)) == len(text) - checked["val_chars"]
  assert checked["vocabulary"] == len(set(text[:int(0.9 * len(text))]))
  assert cfg.model.vocab_size == checked["vocabulary"] + 3 and cfg.train.steps == 2000
  cfg.optimizer.b2 = 0.95
  with pytest.raises(AssertionError):
    nanogpt_shakespeare.check_protocol(cfg, text, train, val)


def test_scaling_sweep_spans_decades_and_the_fit_recovers_an_exponent(tmp_path):
  counts = [scaling_laws.non_embedding_parameters(scaling_laws.size_config(l, d, 10, str(tmp_path), False))
            for l, d in scaling_laws.SIZES]
  assert len(counts) >= 6 and counts == sorted(counts)
  assert math.log10(counts[-1] / counts[0]) >= 1.5
  n = np.array(counts, np.float64)
  rng = np.random.default_rng(0)
  losses = scaling_laws.power_law(n, 2e3, 0.3, 1.5) * (1 + 0.002 * rng.standard_normal(len(n)))
  fit = scaling_laws.fit_power_law(n, losses)
  assert abs(fit["alpha_n"] - 0.3) < 0.05 and abs(fit["l_inf"] - 1.5) < 0.1


def test_t5_objectives_share_model_and_budget_and_differ_in_targets(tmp_path):
  configs = {n: t5_objectives.pretrain_config(n, 10, str(tmp_path), False)
             for n in t5_objectives.OBJECTIVES}
  t5_objectives.check_protocol(configs)
  assert set(configs) == set(t5_objectives.PAPER_GLUE)
  configs["deshuffling"].train.steps = 11
  with pytest.raises(AssertionError):
    t5_objectives.check_protocol(configs)


def test_bert_masking_mixes_measure_as_configured(tmp_path):
  configs = {m: bert_masking.pretrain_config(m, 10, str(tmp_path), False) for m in bert_masking.MIXES}
  shares = bert_masking.check_protocol(configs)
  for mix, expected in bert_masking.MIXES.items():
    assert np.allclose(shares[mix], expected, atol=0.03), mix
  configs["80/0/20"].objective.random_token_rate = 0.1
  with pytest.raises(AssertionError):
    bert_masking.check_protocol(configs)
RUNNER = """
import json, sys
sys.path.insert(0, "experiments")
import bert_masking, nanogpt_shakespeare, scaling_laws, t5_objectives
out, data = sys.argv[1], sys.argv[2]
common = ["--quick", f"--data_dir={data}"]
results = {
    "nanogpt": nanogpt_shakespeare.main(["--quick", f"--out_dir={out}/nanogpt"]),
    "scaling": scaling_laws.main(common + [f"--out_dir={out}/scaling"]),
    "t5": t5_objectives.main(common + ["--objectives=deshuffling", "--no-baseline",
                                       f"--out_dir={out}/t5"]),
    "bert": bert_masking.main(common + ["--mixes=80/0/20", "--no-baseline", f"--out_dir={out}/bert"]),
}
json.dump(results, open(f"{out}/results.json", "w"), default=str)
"""


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
  out = tmp_path_factory.mktemp("reproductions")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", RUNNER, str(out), str(out / "data")], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out, json.loads((out / "results.json").read_text())


def _table(path):
  return json.loads(pathlib.Path(path).read_text())


def _plotted(result):
  return pathlib.Path(result["plot"]).stat().st_size > 1000 and pathlib.Path(result["md"]).exists()


@pytest.mark.slow
def test_nanogpt_quick_follows_the_protocol(quick_runs):
  result = quick_runs[1]["nanogpt"]
  assert result["train_chars"] == int(0.9 * (result["train_chars"] + result["val_chars"]))
  assert result["vocabulary"] == result["model_vocab_size"] - 3  # + <pad>, </s>, <unk>
  assert result["steps"] == 10 and result["nanogpt_val_loss"] == 1.8857
  steps = [row["step"] for row in _table(result["json"])["rows"]]
  assert steps == [5, 10]
  assert 0 < result["val_loss"] < 6 and _plotted(result)


@pytest.mark.slow
def test_scaling_quick_fits_and_plots(quick_runs):
  result = quick_runs[1]["scaling"]
  rows = _table(result["json"])["rows"]
  sizes = [r["non_embedding_params"] for r in rows]
  assert len(rows) == 3 and sizes == sorted(sizes) and len(set(sizes)) == 3
  summary = _table(result["json"])["summary"]
  assert summary["kaplan_alpha_n"] == 0.076 and summary["alpha_n"] > 0
  assert _plotted(result)


@pytest.mark.slow
def test_t5_quick_pretrains_finetunes_and_ranks(quick_runs):
  result = quick_runs[1]["t5"]
  rows = _table(result["json"])["rows"]
  assert [r["objective"] for r in rows] == ["deshuffling"]
  assert 0.0 <= rows[0]["exact_match"] <= 1.0 and rows[0]["paper_glue"] == 73.17
  assert rows[0]["our_rank"] == 1 and _plotted(result)


@pytest.mark.slow
def test_bert_quick_measures_the_masking_mix(quick_runs):
  result = quick_runs[1]["bert"]
  table = _table(result["json"])
  assert [r["mix"] for r in table["rows"]] == ["80/0/20"]
  shares = table["summary"]["measured_mask_same_random_shares"]
  assert set(shares) == {"80/10/10", "100/0/0", "80/0/20", "80/20/0"}
  assert shares["100/0/0"][0] == 1.0 and shares["80/20/0"][2] == 0.0
  assert 0.0 <= table["rows"][0]["accuracy"] <= 1.0 and _plotted(result)
