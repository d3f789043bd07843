"""Classification metrics for the pair classifier: accuracy, log loss, confusion matrix,
and the two baselines every number is read against.

  majority  always predict the most frequent training class; its log loss is that of
            predicting the training class frequencies (a one-hot guess has infinite loss)
  uniform   1/3 for every class: accuracy 1/3 in expectation, log loss ln 3 = 1.0986
"""

from __future__ import annotations

import math

import numpy as np

from llmjax.models.pair_classifier import CLASSES

EPS = 1e-7


def accuracy(probs_NxC: np.ndarray, labels_N: np.ndarray) -> float:
  return float((np.argmax(probs_NxC, axis=-1) == labels_N).mean())


def log_loss(probs_NxC: np.ndarray, labels_N: np.ndarray) -> float:
  """Mean negative log-likelihood of the labels (probabilities clipped at 1e-7)."""
  p = np.clip(np.asarray(probs_NxC, np.float64), EPS, 1.0)
  p = p / p.sum(-1, keepdims=True)
  return float(-np.log(p[np.arange(len(labels_N)), labels_N]).mean())


def confusion_matrix(probs_NxC: np.ndarray, labels_N: np.ndarray,
                     num_classes: int = len(CLASSES)) -> np.ndarray:
  """CxC counts: rows are true classes, columns predicted classes."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (labels_N, np.argmax(probs_NxC, axis=-1)), 1)
  return out


def baselines(train_labels: np.ndarray, labels_N: np.ndarray,
              num_classes: int = len(CLASSES)) -> dict[str, dict[str, float]]:
  prior = np.bincount(train_labels, minlength=num_classes) / max(len(train_labels), 1)
  n = len(labels_N)
  return {
      "majority": {"accuracy": float((labels_N == int(np.argmax(prior))).mean()),
                   "log_loss": log_loss(np.tile(prior, (n, 1)), labels_N)},
      "uniform": {"accuracy": 1.0 / num_classes, "log_loss": math.log(num_classes)},
  }


def evaluate(probs_NxC: np.ndarray, labels_N: np.ndarray, train_labels: np.ndarray) -> dict:
  """Every metric of one evaluation, JSON-ready."""
  return {"examples": int(len(labels_N)),
          "accuracy": accuracy(probs_NxC, labels_N),
          "log_loss": log_loss(probs_NxC, labels_N),
          "confusion": confusion_matrix(probs_NxC, labels_N).tolist(),
          "baselines": baselines(train_labels, labels_N)}


def format_report(report: dict) -> str:
  """A human-readable table of an `evaluate` result."""
  lines = [f"{'':10s} {'accuracy':>9s} {'log loss':>9s}",
           f"{'model':10s} {report['accuracy']:9.4f} {report['log_loss']:9.4f}"]
  for name, b in report["baselines"].items():
    lines.append(f"{name:10s} {b['accuracy']:9.4f} {b['log_loss']:9.4f}")
  width = max(len(c) for c in CLASSES) + 2
  lines.append(f"confusion ({report['examples']} examples; rows true, columns predicted):")
  lines.append(" " * width + "".join(f"{c:>{width}s}" for c in CLASSES))
  for name, row in zip(CLASSES, report["confusion"]):
    lines.append(f"{name:<{width}s}" + "".join(f"{v:>{width}d}" for v in row))
  return "\n".join(lines)
