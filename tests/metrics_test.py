"""metrics.jsonl, train metrics fetched one step late with the NaN check, statistics."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from llmjax.train import metrics as metrics_lib
from llmjax.util import errors


class Bar:
  def __init__(self):
    self.updates, self.postfix = 0, None

  def update(self, n):
    self.updates += n

  def set_postfix(self, **kw):
    self.postfix = kw


def test_lagged_metrics_log_every_n_steps_one_step_late():
  written = []
  lagged = metrics_lib.LaggedMetrics(
    total_steps=5,
    log_every=2,
    per_step=10,
    unit="tokens",
    last_good_step=lambda: 4,
    bar=Bar(),
    write=written.append,
  )
  for step in range(1, 6):
    lagged.dispatched(step, {"train_loss": jnp.float32(step), "grad_norm": jnp.float32(1.0)})
    assert [r["step"] for r in written] == [s for s in (2, 4) if s < step]
  lagged.flush()
  assert [(r["step"], r["train_loss"], r["tokens"]) for r in written] == [
    (2, 2.0, 20),
    (4, 4.0, 40),
    (5, 5.0, 50),
  ]
  assert lagged.last["train_loss"] == 5.0


@pytest.mark.parametrize("bad", ["train_loss", "grad_norm"])
def test_a_non_finite_step_stops_naming_it_and_the_last_good_checkpoint(bad):
  lagged = metrics_lib.LaggedMetrics(
    total_steps=9,
    log_every=100,
    per_step=1,
    unit="pairs",
    last_good_step=lambda: 2,
    bar=Bar(),
    write=lambda r: None,
  )
  lagged.dispatched(
    3, {"train_loss": jnp.float32(1.0), "grad_norm": jnp.float32(1.0), bad: jnp.float32(np.nan)}
  )
  with pytest.raises(errors.TrainingError, match=r"at step 3\. .*checkpoint \(step 2\)"):
    lagged.dispatched(4, {"train_loss": jnp.float32(1.0), "grad_norm": jnp.float32(1.0)})


def test_statistics():
  assert metrics_lib.unigram_entropy(np.array([1, 1, 2, 2])) == pytest.approx(math.log(2))
  assert metrics_lib.bits_per_byte(math.log(2), 2.0) == pytest.approx(0.5)
  assert metrics_lib.count_params({"a": np.zeros((2, 3)), "b": [np.zeros(4)]}) == 10


def test_summary_is_written_whole(tmp_path):
  path = metrics_lib.write_summary(tmp_path, {"status": "finished", "steps": 3})
  assert json.loads(path.read_text()) == {"status": "finished", "steps": 3}


def test_resume_drops_a_metrics_line_torn_by_a_kill(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
    json.dumps({"step": 1, "train_loss": 2.0})
    + "\n"
    + json.dumps({"step": 2, "train_loss": 1.5})
    + "\n"
    + '{"step": 3, "train_lo'
  )
  writer = metrics_lib.MetricsWriter(tmp_path, resume_step=2)
  writer.write({"step": 3, "train_loss": 1.25})
  writer.close()
  assert metrics_lib.read_metrics(tmp_path) == [
    {"step": 1, "train_loss": 2.0},
    {"step": 2, "train_loss": 1.5},
    {"step": 3, "train_loss": 1.25},
  ]
