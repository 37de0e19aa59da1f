"""Metrics of fine-tuning tasks in NumPy: classification, regression, exact match.

`weights` (optional, same shape as the predictions) weigh each example; rows of weight 0
(padding) are dropped before anything else, so their labels and classes never count.
Sums run in float64.
"""

from collections.abc import Sequence

import numpy as np


def _flat(name: str, values) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim == 0:
    raise ValueError(f"{name} must be an array of examples, got a scalar")
  return array.reshape(-1)


def _weighted_rows(*named_arrays, weights=None) -> tuple[list[np.ndarray], np.ndarray]:
  """The arrays flattened, checked to match, and restricted to rows of positive weight."""
  shapes = {name: np.shape(a) for name, a in named_arrays}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"shapes differ: {shapes}")
  arrays = [_flat(name, a) for name, a in named_arrays]
  if weights is None:
    w = np.ones(arrays[0].shape, np.float64)
  else:
    if np.shape(weights) != shapes[named_arrays[0][0]]:
      raise ValueError(f"weights has shape {np.shape(weights)}, the examples "
                       f"{shapes[named_arrays[0][0]]}")
    w = _flat("weights", weights).astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
      raise ValueError("weights must be finite and non-negative")
  keep = w > 0
  if not np.any(keep):
    raise ValueError(f"no example with a positive weight among {w.size}")
  return [a[keep] for a in arrays], w[keep]


def _class_ids(name: str, values: np.ndarray) -> np.ndarray:
  if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f"{name} must be integer class ids, got dtype {values.dtype}")
  return values.astype(np.int64)


def classification_metrics(predictions, labels, weights=None,
                           num_labels: int | None = None) -> dict[str, float]:
  """Accuracy and macro-F1 of predicted class ids against labels.

  Macro-F1 averages F1 = 2 tp / (2 tp + fp + fn) over the classes that occur in the labels
  or the predictions (sklearn's f1_score(average='macro'); with weights, its sample_weight).
  `num_labels`, when given, is checked: every id must be in [0, num_labels).
  """
  (predictions, labels), w = _weighted_rows(("predictions", predictions), ("labels", labels),
                                            weights=weights)
  predictions = _class_ids("predictions", predictions)
  labels = _class_ids("labels", labels)
  if num_labels is not None:
    for name, ids in (("predictions", predictions), ("labels", labels)):
      bad = ids[(ids < 0) | (ids >= num_labels)]
      if bad.size:
        raise ValueError(f"{name} has id {int(bad[0])}, outside [0, num_labels={num_labels})")
  correct = predictions == labels
  classes, index = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  label_index, prediction_index = index[:len(labels)], index[len(labels):]
  true_positive = np.bincount(label_index[correct], w[correct], minlength=len(classes))
  label_weight = np.bincount(label_index, w, minlength=len(classes))  # tp + fn
  prediction_weight = np.bincount(prediction_index, w, minlength=len(classes))  # tp + fp
  f1 = 2 * true_positive / (label_weight + prediction_weight)  # both > 0 for a present class
  return {"accuracy": float(np.sum(w[correct]) / np.sum(w)), "macro_f1": float(np.mean(f1))}


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
  """Weighted Pearson correlation; NaN when x or y is constant (or a single example)."""
  if np.all(x == x[0]) or np.all(y == y[0]):
    return float("nan")
  total = np.sum(w)
  dx = x - np.sum(w * x) / total
  dy = y - np.sum(w * y) / total
  r = np.sum(w * dx * dy) / np.sqrt(np.sum(w * dx * dx) * np.sum(w * dy * dy))
  return float(np.clip(r, -1.0, 1.0))


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Average ranks (ties share the middle of their span), each row spanning its weight.

  With unit weights these are the usual 1-based average ranks less 1/2; a constant shift
  leaves the correlation unchanged, and integer weights act as repeated rows.
  """
  values, inverse = np.unique(x, return_inverse=True)
  weight_of_value = np.bincount(inverse, w, minlength=len(values))
  before = np.cumsum(weight_of_value) - weight_of_value
  return (before + weight_of_value / 2)[inverse]


def regression_metrics(predictions, targets, weights=None) -> dict[str, float]:
  """Pearson and Spearman correlations (NaN when undefined) and the mean squared error.

  Spearman is the Pearson correlation of average ranks (ties share their mean rank), as
  scipy.stats.spearmanr; with weights, Pearson uses the weighted moments and a row of
  integer weight k counts as k equal rows in both correlations.
  """
  (x, y), w = _weighted_rows(("predictions", predictions), ("targets", targets),
                             weights=weights)
  x, y = x.astype(np.float64), y.astype(np.float64)
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("predictions and targets must be finite")
  return {"pearson": _weighted_pearson(x, y, w),
          "spearman": _weighted_pearson(_weighted_ranks(x, w), _weighted_ranks(y, w), w),
          "mse": float(np.sum(w * (x - y) ** 2) / np.sum(w))}


def exact_match(predictions: Sequence[str], references: Sequence) -> float:
  """Share of predictions equal to their reference after stripping surrounding whitespace.

  A reference may be a list of alternative strings; matching any of them counts.
  """
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError("predictions and references must be lists of strings, not one string")
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
  if not predictions:
    raise ValueError("predictions is empty")
  matches = 0
  for i, (prediction, reference) in enumerate(zip(predictions, references)):
    alternatives = [reference] if isinstance(reference, str) else list(reference)
    if not isinstance(prediction, str):
      raise ValueError(f"predictions[{i}] is a {type(prediction).__name__}, not a string")
    if not alternatives or not all(isinstance(r, str) for r in alternatives):
      raise ValueError(f"references[{i}] must be a string or a non-empty list of strings")
    matches += prediction.strip() in {r.strip() for r in alternatives}
  return matches / len(predictions)
