"""Classification metrics for the pair classifier: accuracy (with a bootstrap interval),
log loss, confusion matrix, and the two baselines every number is read against.

  majority  always predict the most frequent training class; its log loss is that of
            predicting the training class frequencies (a one-hot guess has infinite loss)
  uniform   1/3 for every class: accuracy 1/3 in expectation, log loss ln 3 = 1.0986
"""

from __future__ import annotations

import math

import numpy as np

from llmjax.models.pair_classifier import CLASSES

EPS = 1e-7
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def accuracy(probs_NxC: np.ndarray, labels_N: np.ndarray) -> float:
  return float((np.argmax(probs_NxC, axis=-1) == labels_N).mean())


def bootstrap_interval(
  correct_N: np.ndarray,
  *,
  seed: int = BOOTSTRAP_SEED,
  resamples: int = BOOTSTRAP_RESAMPLES,
  level: float = 0.95,
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `correct_N` (0/1 per example).

  Resampling N examples with replacement gives a number of correct ones distributed
  Binomial(N, mean), so each of the `resamples` bootstrap means is drawn directly as
  `np.random.default_rng(seed).binomial(N, mean, size=resamples) / N` (the same
  distribution as index resampling, in O(resamples)). Returns the (1 - level) / 2 and
  (1 + level) / 2 quantiles (numpy's default linear interpolation) of those means.
  """
  correct_N = np.asarray(correct_N)
  n = len(correct_N)
  if n == 0:
    raise ValueError("a bootstrap interval needs at least one example")
  if not 0 < level < 1:
    raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.95")
  if not np.isin(correct_N, (0, 1)).all():
    raise ValueError("bootstrap_interval takes 0/1 (correct / wrong) values")
  mean = float(correct_N.mean())
  means_R = np.random.default_rng(seed).binomial(n, mean, size=resamples) / n
  low, high = np.quantile(means_R, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def accuracy_interval(
  probs_NxC: np.ndarray,
  labels_N: np.ndarray,
  *,
  seed: int = BOOTSTRAP_SEED,
  resamples: int = BOOTSTRAP_RESAMPLES,
  level: float = 0.95,
) -> tuple[float, float]:
  """95% (by default) percentile bootstrap interval of the accuracy."""
  correct_N = np.argmax(probs_NxC, axis=-1) == np.asarray(labels_N)
  return bootstrap_interval(correct_N, seed=seed, resamples=resamples, level=level)


def log_loss(probs_NxC: np.ndarray, labels_N: np.ndarray) -> float:
  """Mean negative log-likelihood of the labels (probabilities clipped at 1e-7)."""
  p = np.clip(np.asarray(probs_NxC, np.float64), EPS, 1.0)
  p = p / p.sum(-1, keepdims=True)
  return float(-np.log(p[np.arange(len(labels_N)), labels_N]).mean())


def confusion_matrix(
  probs_NxC: np.ndarray, labels_N: np.ndarray, num_classes: int = len(CLASSES)
) -> np.ndarray:
  """CxC counts: rows are true classes, columns predicted classes."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (labels_N, np.argmax(probs_NxC, axis=-1)), 1)
  return out


def baselines(
  train_labels: np.ndarray, labels_N: np.ndarray, num_classes: int = len(CLASSES)
) -> dict[str, dict[str, float]]:
  prior = np.bincount(train_labels, minlength=num_classes) / max(len(train_labels), 1)
  n = len(labels_N)
  return {
    "majority": {
      "accuracy": float((labels_N == int(np.argmax(prior))).mean()),
      "log_loss": log_loss(np.tile(prior, (n, 1)), labels_N),
    },
    "uniform": {"accuracy": 1.0 / num_classes, "log_loss": math.log(num_classes)},
  }


def evaluate(
  probs_NxC: np.ndarray,
  labels_N: np.ndarray,
  train_labels: np.ndarray,
  *,
  interval_seed: int = BOOTSTRAP_SEED,
) -> dict:
  """Every metric of one evaluation, JSON-ready; `accuracy_ci95` is the bootstrap
  interval of `accuracy_interval` drawn with `interval_seed`."""
  return {
    "examples": int(len(labels_N)),
    "accuracy": accuracy(probs_NxC, labels_N),
    "accuracy_ci95": list(accuracy_interval(probs_NxC, labels_N, seed=interval_seed)),
    "log_loss": log_loss(probs_NxC, labels_N),
    "confusion": confusion_matrix(probs_NxC, labels_N).tolist(),
    "baselines": baselines(train_labels, labels_N),
  }


def format_report(report: dict) -> str:
  """A human-readable table of an `evaluate` result."""
  lines = [
    f"{'':10s} {'accuracy':>9s} {'log loss':>9s}",
    f"{'model':10s} {report['accuracy']:9.4f} {report['log_loss']:9.4f}",
  ]
  for name, b in report["baselines"].items():
    lines.append(f"{name:10s} {b['accuracy']:9.4f} {b['log_loss']:9.4f}")
  if "accuracy_ci95" in report:
    low, high = report["accuracy_ci95"]
    lines.append(f"model accuracy, 95% bootstrap interval: [{low:.4f}, {high:.4f}]")
  width = max(len(c) for c in CLASSES) + 2
  lines.append(f"confusion ({report['examples']} examples; rows true, columns predicted):")
  lines.append(" " * width + "".join(f"{c:>{width}s}" for c in CLASSES))
  for name, row in zip(CLASSES, report["confusion"]):
    lines.append(f"{name:<{width}s}" + "".join(f"{v:>{width}d}" for v in row))
  return "\n".join(lines)
