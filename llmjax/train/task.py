"""What a job gives the runner (`llmjax.train.runner`) and what a run gives back.

A job subclasses `Task` (state, step, batches, evaluation, its `RunShape`), registers its
job-specific steps as hooks (`ModelSwitch`: the progressive stage switch) and declares its
result fields in a `RunResult` subclass (`Task.result_type`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import ml_collections

from llmjax.train.shape import RunShape


@dataclasses.dataclass(frozen=True)
class ModelSwitch:
  """A hook a task registers in `Task.hooks`, called after every optimizer step but the
  last: when `due(step)`, `apply(state, step)` returns the train state of the next model.
  The runner flushes the pending metrics first (a non-finite loss is never carried over),
  then rewrites config.json, logs a record, restarts the best slot and evaluates the new
  model (the progressive stage switch)."""

  due: Callable[[int], bool]
  apply: Callable[[Any, int], Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunResult:
  """What a run returns; a job's subclass declares the summary fields it adds."""

  workdir: pathlib.Path
  status: str  # finished, stopped_early or interrupted.
  step: int
  final_train_loss: float | None
  best_val_loss: float | None
  final_val_loss: float | None
  best_step: int | None
  stopped_early: bool
  interrupted: bool
  num_params: int
  tokens_per_s: float  # Units (RunShape.unit) per second over the last second of training.
  resumed_from: int | None  # The checkpoint step this run resumed from (None = fresh).
  elapsed_s: float  # Training time, over every resumption.
  best_eval: dict | None = None
  test: dict | None = None
  summary: dict = dataclasses.field(default_factory=dict)  # What summary.json holds.

  @property
  def test_loss(self) -> float | None:
    return (self.test or {}).get("test_loss")

  @classmethod
  def job_fields(cls) -> tuple[str, ...]:
    """The fields a job's subclass adds (filled from the summary of the same name)."""
    base = {f.name for f in dataclasses.fields(RunResult)}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in base)


class Task:
  """What a job supplies. The runner calls, in order: `run_config`, `setup` (which sets
  `shape`), then `abstract_state`/`init_state`, `restored`, and per step `next_batch`,
  `device_batch`, `train_step`, the `hooks`, `evaluate`; at the end `test` and `finish`."""

  shape: RunShape  # Set by `setup`: the run's length, batch sizes and units per step.
  hooks: tuple[ModelSwitch, ...] = ()  # Job-specific steps between optimizer steps.
  result_type: type[RunResult] = RunResult  # Its job fields come from the summary.
  train_iter: Any = None  # The checkpointable (Grain) iterator that feeds `next_batch`.
  reference = ""  # Printed beside each evaluation (e.g. the unigram entropy).

  def __init__(
    self, config: ml_collections.ConfigDict, workdir: pathlib.Path, latest_step: int | None
  ):
    self.config, self.workdir, self.latest_step = config, workdir, latest_step

  def run_config(self) -> ml_collections.ConfigDict:
    """The config written to DIR/config.json (checked against it on resume)."""
    return self.config

  def setup(self) -> dict:
    """Loads data, sets `shape` and builds the steps; returns facts for summary.json."""
    raise NotImplementedError

  def abstract_state(self, step: int):
    """The train state (ShapeDtypeStructs with shardings) of the checkpoint at `step`."""
    raise NotImplementedError

  def init_state(self):
    raise NotImplementedError

  def restored(self, step: int, state) -> None:
    """Called after a checkpoint at `step` was restored."""

  def startup_line(self, num_params: int, start_step: int) -> str:
    return f"llmjax: {self.config.name} | {num_params / 1e6:.2f}M parameters"

  def next_batch(self, step: int):
    """The host batch of step `step + 1`."""
    return next(self.train_iter)

  def device_batch(self, host_batch, step: int):
    raise NotImplementedError

  def train_step(self, step: int):
    """The jitted step(state, batch) -> (state, metrics) run after `step` steps."""
    raise NotImplementedError

  def record_extras(self) -> dict:
    """Fields added to every metrics record (e.g. the progressive stage)."""
    return {}

  def evaluate(self, params) -> dict:
    """Validation metrics; `val_loss` (lower is better) picks the best and drives patience."""
    raise NotImplementedError

  def goal_reached(self, result: dict) -> str | None:
    """After an evaluation: a message when the job's own goal is met (training then stops
    as with patience), else None. Book learning stops once it recites its book."""
    return None

  def test(self, params) -> dict | None:
    """Test-split metrics of the best parameters, when the job has a test split."""
    return None

  def finish(self, state, interrupted: bool, best_eval: dict | None, test: dict | None) -> dict:
    """Job-specific end of the run (samples, reports); returns summary fields (and
    `artifacts`: file names in the workdir for the tracker)."""
    return {}
