"""Task metrics against hand-computed cases, scipy.stats and sklearn."""

import math

import numpy as np
import pytest

from llm_jax.evaluation import task_metrics


# -- classification_metrics -------------------------------------------------------------------


def test_classification_hand_computed():
  labels = [0, 0, 1, 1, 2, 2]
  predictions = [0, 1, 1, 1, 2, 0]
  # Class 0: tp 1, fp 1, fn 1 -> 2/4. Class 1: tp 2, fp 1 -> 4/5. Class 2: tp 1, fn 1 -> 2/3.
  metrics = task_metrics.classification_metrics(predictions, labels)
  assert metrics["accuracy"] == pytest.approx(4 / 6)
  assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_classes_only_predicted_count_and_absent_classes_do_not():
  labels = np.array([0, 0, 1])
  predictions = np.array([0, 3, 1])
  # Class 0: 2/3; class 1: 1; class 3 (predicted, never a label): 0; classes 2 and 4: absent.
  expected = (2 / 3 + 1 + 0) / 3
  for num_labels in (None, 4, 5):
    metrics = task_metrics.classification_metrics(predictions, labels, num_labels=num_labels)
    assert metrics["macro_f1"] == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="outside"):
    task_metrics.classification_metrics(predictions, labels, num_labels=3)


def test_classification_weights_drop_padding_and_act_as_repeats():
  labels = np.array([[0, 1, 2], [1, 1, -1]])  # -1: padding, weight 0
  predictions = np.array([[0, 2, 2], [1, 0, 7]])
  weights = np.array([[1, 2, 1], [3, 1, 0]])
  repeats = weights.reshape(-1)
  expected = task_metrics.classification_metrics(
      np.repeat(predictions.reshape(-1), repeats), np.repeat(labels.reshape(-1), repeats))
  metrics = task_metrics.classification_metrics(predictions, labels, weights, num_labels=3)
  assert metrics == pytest.approx(expected)
  # Class 0: tp 1, fp 1 -> 2/3; class 1: tp 3, fn 3 -> 6/9; class 2: tp 1, fp 2 -> 2/4.
  assert metrics["macro_f1"] == pytest.approx((2 / 3 + 6 / 9 + 2 / 4) / 3)
  assert metrics["accuracy"] == pytest.approx(5 / 8)
  # Scaling all weights changes nothing.
  scaled = task_metrics.classification_metrics(predictions, labels, 0.25 * weights)
  assert scaled == pytest.approx(metrics)


def test_classification_matches_sklearn():
  from sklearn import metrics as sklearn_metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 6, 200)
  predictions = np.where(rng.random(200) < 0.5, labels, rng.integers(0, 7, 200))
  weights = rng.random(200) + 0.1
  for w in (None, weights):
    metrics = task_metrics.classification_metrics(predictions, labels, w)
    assert metrics["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(labels, predictions, average="macro", sample_weight=w))
    assert metrics["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(labels, predictions, sample_weight=w))


def test_classification_rejects_bad_input():
  with pytest.raises(ValueError, match="integer"):
    task_metrics.classification_metrics([0.0, 1.0], [0, 1])
  with pytest.raises(ValueError, match="shapes differ"):
    task_metrics.classification_metrics([0, 1, 1], [0, 1])
  with pytest.raises(ValueError, match="positive weight"):
    task_metrics.classification_metrics([0, 1], [0, 1], weights=[0, 0])
  with pytest.raises(ValueError, match="non-negative"):
    task_metrics.classification_metrics([0, 1], [0, 1], weights=[1, -1])


# -- regression_metrics -----------------------------------------------------------------------


def _data(n=60, seed=0):
  rng = np.random.default_rng(seed)
  targets = np.round(rng.normal(size=n), 1)  # Rounded, so both sides have ties.
  predictions = np.round(0.6 * targets + 0.8 * rng.normal(size=n), 1)
  return predictions, targets


def test_regression_matches_scipy():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  predictions, targets = _data()
  assert len(np.unique(targets)) < len(targets)
  metrics = task_metrics.regression_metrics(predictions, targets)
  assert metrics["pearson"] == pytest.approx(stats.pearsonr(predictions, targets)[0], abs=1e-12)
  assert metrics["spearman"] == pytest.approx(stats.spearmanr(predictions, targets)[0],
                                              abs=1e-12)
  assert metrics["mse"] == pytest.approx(np.mean((predictions - targets) ** 2))


def test_spearman_ties_hand_computed():
  # Average ranks: predictions [1, 2.5, 2.5, 4], targets [1.5, 1.5, 3, 4].
  metrics = task_metrics.regression_metrics([1, 2, 2, 3], [5, 5, 6, 7])
  rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1.5, 1.5, 3, 4])
  assert metrics["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
  assert metrics["mse"] == pytest.approx((16 + 9 + 16 + 16) / 4)


def test_regression_weights():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  predictions, targets = _data(seed=1)
  rng = np.random.default_rng(2)
  # 0/1 weights: the metrics of the kept rows.
  mask = rng.random(len(targets)) < 0.7
  masked = task_metrics.regression_metrics(predictions, targets, mask.astype(np.float32))
  assert masked["pearson"] == pytest.approx(
      stats.pearsonr(predictions[mask], targets[mask])[0], abs=1e-12)
  assert masked["spearman"] == pytest.approx(
      stats.spearmanr(predictions[mask], targets[mask])[0], abs=1e-12)
  assert masked["mse"] == pytest.approx(np.mean((predictions[mask] - targets[mask]) ** 2))
  # Integer weights: repeated rows.
  counts = rng.integers(0, 4, len(targets))
  weighted = task_metrics.regression_metrics(predictions, targets, counts)
  x, y = np.repeat(predictions, counts), np.repeat(targets, counts)
  assert weighted["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
  assert weighted["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  assert weighted["mse"] == pytest.approx(np.mean((x - y) ** 2))
  # Fractional weights: weighted moments; scale-free.
  w = rng.random(len(targets))
  fractional = task_metrics.regression_metrics(predictions, targets, w)
  cov = np.cov(predictions, targets, aweights=w)
  assert fractional["pearson"] == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
  assert task_metrics.regression_metrics(predictions, targets, 7.5 * w) == pytest.approx(
      fractional)


def test_regression_undefined_correlations_are_nan():
  metrics = task_metrics.regression_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
  assert math.isnan(metrics["pearson"]) and math.isnan(metrics["spearman"])
  assert metrics["mse"] == pytest.approx(5 / 3)
  single = task_metrics.regression_metrics([2.0, 9.0], [3.0, 1.0], weights=[1, 0])
  assert math.isnan(single["pearson"]) and single["mse"] == pytest.approx(1.0)
  perfect = task_metrics.regression_metrics([1, 2, 3, 10], [2, 4, 6, 20])
  assert perfect["pearson"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="finite"):
    task_metrics.regression_metrics([1.0, np.nan], [1.0, 2.0])


# -- exact_match ------------------------------------------------------------------------------


def test_exact_match_strips_whitespace():
  predictions = [" Paris\n", "london", "42 ", ""]
  references = ["Paris", "London", "  42", " "]
  assert task_metrics.exact_match(predictions, references) == pytest.approx(3 / 4)


def test_exact_match_alternatives_and_errors():
  assert task_metrics.exact_match(["b", "c"], [["a", " b"], "d"]) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="not one string"):
    task_metrics.exact_match("abc", "abc")
  with pytest.raises(ValueError, match="2 predictions but 1"):
    task_metrics.exact_match(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="empty"):
    task_metrics.exact_match([], [])
