"""Classification metrics: accuracy, log loss, confusion, baselines, bootstrap interval."""

import math

import numpy as np

from llmjax.train import classify_metrics


def test_metrics_and_baselines():
  labels = np.array([0, 0, 1, 2])
  probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
  assert classify_metrics.accuracy(probs, labels) == 0.75
  want = -np.mean(np.log([0.7, 0.3, 0.8, 0.6]))
  assert math.isclose(classify_metrics.log_loss(probs, labels), want, rel_tol=1e-9)
  np.testing.assert_array_equal(
    classify_metrics.confusion_matrix(probs, labels), [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
  )
  base = classify_metrics.baselines(np.array([1, 1, 1, 0]), labels)
  assert base["majority"]["accuracy"] == 0.25
  prior = np.array([0.25, 0.75, 1e-7])
  want_prior = -np.mean(np.log(prior[[0, 0, 1, 2]] / prior.sum()))
  assert math.isclose(base["majority"]["log_loss"], want_prior, rel_tol=1e-6)
  assert base["uniform"] == {"accuracy": 1 / 3, "log_loss": math.log(3)}
  text = classify_metrics.format_report(classify_metrics.evaluate(probs, labels, labels))
  assert "model         0.7500" in text and "\nmodel_a          1        1        0\n" in text


def test_bootstrap_interval_is_seeded_and_exact():
  # Two examples, one right: numpy's seed-0 stream draws 1, 1, 0, 0 correct of 2; the
  # 2.5% and 97.5% quantiles of the means (0.5, 0.5, 0, 0) are 0 and 0.5.
  np.testing.assert_array_equal(np.random.default_rng(0).binomial(2, 0.5, size=4), [1, 1, 0, 0])
  assert classify_metrics.bootstrap_interval(np.array([1, 0]), seed=0, resamples=4) == (0.0, 0.5)
  correct = np.r_[np.ones(120, int), np.zeros(80, int)]
  assert classify_metrics.bootstrap_interval(correct, seed=0) == (0.535, 0.67)
  assert classify_metrics.bootstrap_interval(correct, seed=1) == (0.53, 0.66)
  normal = 1.96 * math.sqrt(0.6 * 0.4 / 200)
  low, high = classify_metrics.bootstrap_interval(correct)
  assert abs(low - (0.6 - normal)) < 0.01 and abs(high - (0.6 + normal)) < 0.01
  assert classify_metrics.bootstrap_interval(np.ones(7, int)) == (1.0, 1.0)
  probs = np.eye(3)[[0, 1, 2, 0]]
  report = classify_metrics.evaluate(probs, np.array([0, 1, 2, 1]), np.array([0, 1]))
  assert report["accuracy"] == 0.75
  assert report["accuracy_ci95"] == list(
    classify_metrics.bootstrap_interval(np.array([1, 1, 1, 0]))
  )
  assert "95% bootstrap interval: [" in classify_metrics.format_report(report)
