"""metrics.jsonl writing (one JSON object per logged step), train metrics fetched one
step late with the NaN check, summary.json, and small statistics."""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Callable

import jax
import numpy as np

from llmjax.util import errors, fileio


class MetricsWriter:
  """Appends JSON lines to DIR/metrics.jsonl; on resume, drops lines past the restored step
  so the file reads exactly as if the run had never stopped.

  The rewrite on resume is atomic, and a last line torn by a killed process is dropped.
  """

  def __init__(
    self,
    workdir: str | pathlib.Path,
    *,
    resume_step: int | None,
    enabled: bool = True,
    filename: str = "metrics.jsonl",
  ):
    self.path = pathlib.Path(workdir) / filename
    self.enabled = enabled
    if not enabled:
      return
    kept = []
    if resume_step is not None and self.path.exists():
      kept = [
        line
        for line in self.path.read_text().splitlines()
        if _parses(line) and json.loads(line).get("step", 0) <= resume_step
      ]
    fileio.atomic_write_text(self.path, "".join(line + "\n" for line in kept))
    self._file = self.path.open("a")

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    clean = {
      k: (
        float(v)
        if isinstance(v, (np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))
        else v
      )
      for k, v in record.items()
    }
    self._file.write(json.dumps(clean, sort_keys=True) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()


def _parses(line: str) -> bool:
  try:
    return isinstance(json.loads(line), dict)
  except json.JSONDecodeError:
    return False


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unigram_entropy(tokens: np.ndarray) -> float:
  """Entropy in nats of the token unigram distribution: the loss of a model that ignores
  context entirely. A useful reference line for validation loss."""
  counts = np.bincount(np.asarray(tokens, dtype=np.int64))
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def perplexity(loss: float) -> float:
  return math.exp(min(loss, 50.0))


def bytes_per_token(tokens: np.ndarray, tokenizer, max_tokens: int = 2_000_000) -> float:
  """UTF-8 bytes of text per token id (over at most the first `max_tokens` ids): converts a
  loss in nats per token into bits per byte, `loss / ln 2 / bytes_per_token`."""
  ids = np.asarray(tokens[:max_tokens])
  if len(ids) == 0:
    return float("nan")
  return len(tokenizer.decode(ids).encode("utf-8")) / len(ids)


def bits_per_byte(loss: float, bytes_per_tok: float) -> float:
  return loss / math.log(2) / bytes_per_tok


def write_summary(workdir: str | pathlib.Path, summary: dict) -> pathlib.Path:
  """Writes DIR/summary.json atomically (what the report reads for each run)."""
  path = pathlib.Path(workdir) / "summary.json"
  fileio.atomic_write_json(path, summary, sort_keys=True)
  return path


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


class LaggedMetrics:
  """Train-step metrics fetched one step late, so the host never waits on the step it has
  just dispatched: checks every step's loss and gradient norm for NaN/inf, logs every
  `log_every` steps through `write`, and keeps the throughput and the progress bar current.

  `unit` names what `per_step` counts (tokens, pairs): records carry `<unit>_per_s` and
  `<unit>` (the running total).
  """

  def __init__(
    self,
    *,
    total_steps: int,
    log_every: int,
    per_step: int,
    unit: str,
    last_good_step: Callable[[], int | None],
    bar,
    write,
  ):
    self.total_steps, self.log_every = total_steps, max(log_every, 1)
    self.per_step, self.unit, self.last_good_step = per_step, unit, last_good_step
    self.bar, self.write = bar, write
    self.pending = None  # (step, device metrics) not fetched yet.
    self.last = None  # Host metrics of the newest fetched step.
    self.throughput = 0.0  # Units/s over the last second or so.
    self.restart_clock()

  def restart_clock(self) -> None:
    """Starts a new throughput window (e.g. after a pause that was not training)."""
    self._t_last, self._since = time.perf_counter(), 0

  def dispatched(self, step: int, device_metrics: dict) -> None:
    """Step `step` was dispatched: fetches the previous step's metrics, queues these."""
    self.flush()
    self.pending = (step, device_metrics)
    self._since += 1
    now = time.perf_counter()
    if now - self._t_last > 1.0 or step == self.total_steps:
      self.throughput = self._since * self.per_step / (now - self._t_last)
      self.restart_clock()
      if self.last:
        self.bar.set_postfix(
          loss=f"{self.last['train_loss']:.3f}",
          **{("tok_s" if self.unit == "tokens" else f"{self.unit}_s"): f"{self.throughput:,.0f}"},
          refresh=False,
        )
    self.bar.update(1)

  def flush(self) -> None:
    """Waits for the queued step's metrics; raises TrainingError if they are not finite."""
    if self.pending is None:
      return
    step, device_metrics = self.pending
    self.pending = None
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    loss, norm = host["train_loss"], host.get("grad_norm", 0.0)
    if not (math.isfinite(loss) and math.isfinite(norm)):
      raise errors.TrainingError(
        f"Loss became {loss} (grad norm {norm}) at step {step}. Stopping; the last good "
        f"checkpoint (step {self.last_good_step()}) is intact. Lower optim.learning_rate "
        "or raise optim.warmup_steps, then re-run to resume from it."
      )
    self.last = host
    if step % self.log_every == 0 or step == self.total_steps:
      self.write(
        {
          "step": step,
          **host,
          f"{self.unit}_per_s": self.throughput,
          self.unit: step * self.per_step,
        }
      )
