"""The one training runner: every job (`train`, `progressive`, `classify`) goes through it.

The runner owns what every job promises: the workdir lock and stop signals (SIGTERM and
SIGINT save and exit cleanly); restore-or-init, falling back to an older readable
checkpoint; the memory check on the compiled step before it first runs; train metrics
fetched one step late with the NaN/inf check on every step; evaluation, the best
parameters and patience; checkpoints of state and data-iterator state; metrics.jsonl, the
MLflow tracker and summary.json; test-split evaluation on the best parameters; the
progress bar. A job supplies a `Task`: its state, step, batches, evaluation and hooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from llmjax.config import validate as config_validate
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.runs import report
from llmjax.runs import track as track_lib
from llmjax.runs import workdir as workdir_lib
from llmjax.train import memory
from llmjax.train import metrics as metrics_lib

log = logging.getLogger(__name__)


class Task:
  """What a job supplies. The runner calls, in order: `run_config`, `setup`, then
  `abstract_state`/`init_state`, `restored`, and per step `next_batch`, `device_batch`,
  `train_step`, `switch_due`/`switch`, `evaluate`; at the end `test` and `finish`."""

  unit = "tokens"  # What `per_step` counts; metrics carry `<unit>_per_s` and `<unit>`.
  per_step = 0  # Units per optimizer step.
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
    """Loads data and builds the steps; returns facts for summary.json."""
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

  def switch_due(self, step: int) -> bool:
    """True when the model changes after `step` (the progressive stage switch)."""
    return False

  def switch(self, state, step: int):
    """Returns the state of the next model; the best slot restarts and is re-evaluated."""
    raise NotImplementedError

  def evaluate(self, params) -> dict:
    """Validation metrics; `val_loss` (lower is better) picks the best and drives patience."""
    raise NotImplementedError

  def test(self, params) -> dict | None:
    """Test-split metrics of the best parameters, when the job has a test split."""
    return None

  def finish(self, state, interrupted: bool, best_eval: dict | None, test: dict | None) -> dict:
    """Job-specific end of the run (samples, reports); returns summary fields (and
    `artifacts`: file names in the workdir for the tracker)."""
    return {}


@dataclasses.dataclass
class RunResult:
  workdir: pathlib.Path
  step: int
  final_train_loss: float | None
  best_val_loss: float | None
  final_val_loss: float | None
  stopped_early: bool
  interrupted: bool
  num_params: int
  tokens_per_s: float  # Units (Task.unit) per second over the last second of training.
  best_eval: dict | None = None
  test: dict | None = None
  summary: dict = dataclasses.field(default_factory=dict)

  def __getattr__(self, name):  # Job-specific summary fields: samples, report, ...
    summary = self.__dict__.get("summary", {})
    if name in summary:
      return summary[name]
    raise AttributeError(name)

  @property
  def test_loss(self):
    return (self.test or {}).get("test_loss")


def run(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  task_class,
  *,
  stop_at_step: int | None = None,
) -> RunResult:
  """Trains (or resumes) `config` in `workdir` with the job's `task_class`.

  `stop_at_step` saves and returns there as if a stop signal had arrived (for tests)."""
  config_validate.validate(config)
  workdir = pathlib.Path(workdir).absolute()
  with workdir_lib.workdir_lock(workdir), workdir_lib.StopSignal() as stop:
    return _Run(config, workdir, task_class, stop, stop_at_step).run()


def batch_hash(batch) -> str:
  """A short digest of a host batch (for the `train.log_batch_hashes` log)."""
  digest = hashlib.blake2b(digest_size=8)
  batch = batch if isinstance(batch, dict) else {"batch": batch}
  for key in sorted(batch):
    digest.update(np.ascontiguousarray(batch[key]).tobytes())
  return digest.hexdigest()


def poison_params(state):
  """`train.debug_nan_step`: NaN parameters, so the step's loss and update are NaN."""
  return {**state, "params": jax.tree.map(lambda x: x * jnp.nan, state["params"])}


class _Run:
  """One run of one task; the state of the loop lives here."""

  def __init__(self, config, workdir, task_class, stop, stop_at_step):
    self.config, self.tc, self.workdir = config, config.train, workdir
    self.stop, self.stop_at_step = stop, stop_at_step
    self.chief = jax.process_index() == 0
    self.t_start = time.perf_counter()
    self.checkpointer = ckpt_lib.Checkpointer(workdir, keep=self.tc.keep_checkpoints)
    self.task = task_class(config, workdir, self.checkpointer.latest_step())
    self.compiled = {}  # id(jitted step) -> (jitted step, memory-checked executable).

  def say(self, text: str) -> None:
    if self.chief:
      self.bar.write(text) if getattr(self, "bar", None) else print(text, flush=True)

  def elapsed(self) -> float:
    return self.elapsed_before + time.perf_counter() - self.t_start

  def write_config(self, resuming: bool) -> None:
    if self.chief:
      workdir_lib.write_config(self.workdir, self.task.run_config(), resuming)

  def restore_or_init(self):
    task, resuming = self.task, self.task.latest_step is not None
    restored = None
    if resuming:
      restored = self.checkpointer.restore_latest(task.abstract_state, task.train_iter)
    if restored is None:
      return task.init_state(), 0, {}, False
    step, state, meta = restored
    task.restored(step, state)
    return state, step, meta, True

  def step_fn(self, jitted, state, batch):
    """The compiled step; the first time a step function is seen, its memory is checked."""
    entry = self.compiled.get(id(jitted))
    if entry is None:
      compiled = jitted.lower(state, batch).compile()
      memory.check_step_fits(compiled, self.config, float(self.tc.memory_limit_gib))
      entry = self.compiled[id(jitted)] = (jitted, compiled)
    return entry[1]

  def log_record(self, record: dict) -> None:
    record = {**record, **self.task.record_extras(), "elapsed_s": round(self.elapsed(), 3)}
    self.writer.write(record)
    self.tracker.log_metrics(record, record["step"])

  def run_eval(self, step: int, state) -> None:
    result = self.task.evaluate(state["params"])
    self.last_val = result["val_loss"]
    if self.best_val is None or self.last_val < self.best_val:
      self.best_val, self.best_eval, self.best_step = self.last_val, result, step
      self.evals_without_improvement = 0
      self.checkpointer.save_best(
        step,
        state["params"],
        {"step": step, "val_loss": self.last_val, "eval": result, **self.task.record_extras()},
      )
    else:
      self.evals_without_improvement += 1
    self.log_record(
      {
        "step": step,
        **{k: v for k, v in result.items() if not isinstance(v, dict)},
        self.task.unit: step * self.task.per_step,
      }
    )
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    self.say(
      f"step {step}: {shown} (best val_loss {self.best_val:.4f}"
      + (f", {self.task.reference}" if self.task.reference else "")
      + ")"
    )

  def meta(self, step: int) -> dict:
    return {
      "step": step,
      "best_val_loss": self.best_val,
      "best_eval": self.best_eval,
      "best_step": self.best_step,
      "elapsed_s": self.elapsed(),
      "evals_without_improvement": self.evals_without_improvement,
      "config_name": self.config.name,
      **self.task.record_extras(),
    }

  def run(self) -> RunResult:
    task = self.task
    self.write_config(resuming=task.latest_step is not None)
    summary_facts = task.setup()
    self.tc = tc = task.config.train  # A job may resolve its length in setup (epochs).
    state, start_step, meta, resuming = self.restore_or_init()
    self.write_config(resuming=False)  # A fallback may have restored an older stage.
    self.elapsed_before = float(meta.get("elapsed_s", 0.0))
    self.best_val, self.best_eval = meta.get("best_val_loss"), meta.get("best_eval")
    self.best_step = meta.get("best_step")
    self.evals_without_improvement = meta.get("evals_without_improvement", 0)
    self.last_val = None
    num_params = metrics_lib.count_params(state["params"])
    summary = {
      "name": self.config.name,
      "job": self.config.job,
      "status": "running",
      "num_params": num_params,
      "resumed_from": start_step if resuming else None,
      **summary_facts,
    }
    if self.chief:
      print(
        task.startup_line(num_params, start_step)
        + (f" | resuming from step {start_step}" if resuming else ""),
        flush=True,
      )
      metrics_lib.write_summary(self.workdir, summary)
    self.tracker = track_lib.make_tracker(self.config, self.workdir, enabled=self.chief)
    self.tracker.log_params(self.config)
    self.tracker.log_artifact(self.workdir / "config.json")
    resume_step = start_step if resuming else None
    self.writer = metrics_lib.MetricsWriter(
      self.workdir, resume_step=resume_step, enabled=self.chief
    )
    hash_log = metrics_lib.MetricsWriter(
      self.workdir,
      resume_step=resume_step,
      enabled=self.chief and tc.log_batch_hashes,
      filename="batch_hashes.jsonl",
    )
    if not resuming and task.record_extras():
      self.log_record({"step": 0, task.unit: 0})
    self.bar = tqdm(
      total=tc.steps,
      initial=start_step,
      disable=not self.chief,
      unit="step",
      dynamic_ncols=True,
      desc=self.config.name,
    )
    lagged = metrics_lib.LaggedMetrics(
      total_steps=tc.steps,
      log_every=tc.log_every,
      per_step=task.per_step,
      unit=task.unit,
      last_good_step=self.checkpointer.latest_step,
      bar=self.bar,
      write=self.log_record,
    )
    step, stopped_early, interrupted, status = start_step, False, None, "FAILED"
    try:
      while step < tc.steps:
        host_batch = task.next_batch(step)
        if tc.log_batch_hashes:
          hash_log.write({"step": step + 1, "hash": batch_hash(host_batch)})
        batch = task.device_batch(host_batch, step)
        if step + 1 == tc.debug_nan_step:
          state = poison_params(state)
        step_fn = self.step_fn(task.train_step(step), state, batch)
        try:
          state, device_metrics = step_fn(state, batch)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is translated.
          if memory.is_out_of_memory(e):
            raise memory.out_of_memory_error(
              e, step + 1, self.checkpointer.latest_step(), self.config
            ) from None
          raise
        step += 1
        lagged.dispatched(step, device_metrics)
        switch = step < tc.steps and task.switch_due(step)
        is_eval = bool(tc.eval_every and step % tc.eval_every == 0) or step == tc.steps
        is_save = bool(tc.checkpoint_every and step % tc.checkpoint_every == 0) or (
          step == tc.steps
        )
        stop_here = self.stop_at_step is not None and step >= self.stop_at_step
        if switch or is_eval or is_save or self.stop.received or stop_here:
          lagged.flush()  # Never switch, evaluate or save a state whose loss was not finite.
        if switch:
          state = task.switch(state, step)
          self.write_config(resuming=True)
          self.log_record({"step": step, task.unit: step * task.per_step})
          self.bar.set_description(
            " ".join([self.config.name] + [f"{k} {v}" for k, v in task.record_extras().items()])
          )
          self.best_val, self.evals_without_improvement = None, 0
          self.run_eval(step, state)  # Refreshes the best slot with the new model.
          lagged.restart_clock()  # Compilation is not throughput.
        elif is_eval:
          self.run_eval(step, state)
          if tc.patience and self.evals_without_improvement >= tc.patience:
            stopped_early = True
            self.say(f"Early stop at step {step}: no improvement in {tc.patience} evaluations.")
        if is_save or stopped_early or self.stop.received or stop_here:
          self.checkpointer.save(step, state, task.train_iter, self.meta(step))
        if self.stop.received or stop_here:
          interrupted = self.stop.received or "stop_at_step"
          self.say(
            f"Received {interrupted}: saved checkpoint {step}; re-run the same command to resume."
          )
          break
        if stopped_early:
          break
      lagged.flush()
      status = "KILLED" if interrupted else "FINISHED"
    finally:
      self.bar.close()
      self.writer.close()
      hash_log.close()
      self.checkpointer.close()
      if status == "FAILED":
        if self.chief:
          metrics_lib.write_summary(
            self.workdir,
            {**summary, "status": "failed", "steps": step, "elapsed_s": self.elapsed()},
          )
        self.tracker.close("FAILED")

    try:
      test = None
      if not interrupted:
        test = task.test(self.best_params(state))
        if test:
          summary.update(test)
          self.say(
            "test: "
            + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
            + " (best-validation parameters)"
          )
      finished = dict(task.finish(state, interrupted is not None, self.best_eval, test))
      artifacts = finished.pop("artifacts", ())
      summary.update(finished)
      final_train = lagged.last and lagged.last["train_loss"]
      if resuming and step == start_step:  # Nothing left to train: the logged figures stand.
        records = metrics_lib.read_metrics(self.workdir)
        final_train = next((r["train_loss"] for r in reversed(records) if "train_loss" in r), None)
        self.last_val = next((r["val_loss"] for r in reversed(records) if "val_loss" in r), None)
      summary.update(
        status=("interrupted" if interrupted else "stopped_early" if stopped_early else "finished"),
        steps=step,
        final_train_loss=final_train,
        best_val_loss=self.best_val,
        final_val_loss=self.last_val,
        best_step=self.best_step,
        elapsed_s=self.elapsed(),
        **{task.unit: step * task.per_step},
      )
      if self.chief:
        self.tracker.log_artifact(metrics_lib.write_summary(self.workdir, summary))
        for name in artifacts:
          self.tracker.log_artifact(self.workdir / name)
        self.log_report()
    except BaseException:
      status = "FAILED"
      raise
    finally:
      self.tracker.close(status)
    return RunResult(
      workdir=self.workdir,
      step=step,
      final_train_loss=final_train,
      best_val_loss=self.best_val,
      final_val_loss=self.last_val,
      stopped_early=stopped_early,
      interrupted=interrupted is not None,
      num_params=num_params,
      tokens_per_s=lagged.throughput,
      best_eval=self.best_eval,
      test=test,
      summary=summary,
    )

  def best_params(self, state):
    """The parameters of the best evaluation (from DIR/best), else the current ones."""
    if self.best_step is None:
      return state["params"]
    target = self.task.abstract_state(self.best_step)["params"]
    params, _ = ckpt_lib.restore_params(self.workdir, target, "best")
    return params

  def log_report(self) -> None:
    """Writes this run's report and plots to DIR/report and logs them (MLflow runs only)."""
    if not self.tracker.active:
      return
    try:
      self.tracker.log_artifact(
        report.write_report([self.workdir], self.workdir / "report"), "report"
      )
    except Exception as e:  # noqa: BLE001 - a plotting problem must not fail a finished run.
      log.warning("Could not write the report of %s: %s: %s", self.workdir, type(e).__name__, e)
