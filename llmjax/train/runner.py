"""The one training runner: every job (`train`, `progressive`, `classify`) goes through it.

The runner owns what every job promises: the workdir lock and stop signals (SIGTERM and
SIGINT save and exit cleanly); restore-or-init, falling back to an older readable
checkpoint; the memory check on the compiled step before it first runs; train metrics
fetched one step late with the NaN/inf check on every step; evaluation, the best
parameters and patience; checkpoints of state and data-iterator state; metrics.jsonl, the
MLflow tracker and summary.json; test-split evaluation on the best parameters; the
progress bar. A job supplies a `Task`: its state, step, batches, evaluation, its
`RunShape` (run length and batch sizes) and its hooks; the run returns the task's typed
`RunResult`.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from llmjax.config import validate as config_validate
from llmjax.parallel import mesh as mesh_lib
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.runs import report
from llmjax.runs import track as track_lib
from llmjax.runs import workdir as workdir_lib
from llmjax.train import memory
from llmjax.train import metrics as metrics_lib
from llmjax.train.task import ModelSwitch, RunResult

log = logging.getLogger(__name__)


def run(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  task_class,
  *,
  stop_at_step: int | None = None,
) -> RunResult:
  """Trains (or resumes) `config` in `workdir` with the job's `task_class`.

  `stop_at_step` saves and returns there as if a stop signal had arrived (for tests)."""
  config_validate.validated(config)  # Not again when the entry point validated it unchanged.
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
  """One run of one task; the state of the loop lives here. `run` is `start` (setup,
  restore-or-init, logs), `train` (the loop: `one_step`, then `after_step`) and `end`
  (test split, the job's finish, summary.json, the result)."""

  def __init__(self, config, workdir, task_class, stop, stop_at_step):
    self.config, self.tc, self.workdir = config, config.train, workdir
    self.stop, self.stop_at_step = stop, stop_at_step
    self.chief = jax.process_index() == 0
    self.t_start = time.perf_counter()
    self.checkpointer = ckpt_lib.Checkpointer(workdir, keep=self.tc.keep_checkpoints)
    self.task = task_class(config, workdir, self.checkpointer.latest_step())
    self.compiled = {}  # id(jitted step) -> (jitted step, memory-checked executable).
    self.bar = None

  def run(self) -> RunResult:
    state = self.start()
    state = self.train(state)
    return self.end(state)

  # --- helpers -------------------------------------------------------------------------

  def say(self, text: str) -> None:
    if self.chief:
      self.bar.write(text) if self.bar is not None else print(text, flush=True)

  def elapsed(self) -> float:
    return self.elapsed_before + time.perf_counter() - self.t_start

  def units(self, step: int) -> dict:
    return {self.shape.unit: step * self.shape.per_step}

  def write_config(self, resuming: bool) -> None:
    if self.chief:
      workdir_lib.write_config(self.workdir, self.task.run_config(), resuming, task=self.task)

  def log_record(self, record: dict) -> None:
    record = {**record, **self.task.record_extras(), "elapsed_s": round(self.elapsed(), 3)}
    self.writer.write(record)
    self.tracker.log_metrics(record, record["step"])

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

  # --- start ---------------------------------------------------------------------------

  def start(self):
    """Setup, restore-or-init, summary.json, the tracker, the logs and the progress bar."""
    task = self.task
    if task.latest_step is not None:  # A changed run is refused before anything is written.
      workdir_lib.check_resume(self.workdir, task)
    facts = task.setup()
    self.shape = task.shape
    if task.latest_step is not None:  # Again with the data's fingerprints.
      workdir_lib.check_resume(self.workdir, task)
    state, self.start_step, meta, self.resuming = self.restore_or_init()
    self.write_config(resuming=False)  # Only now; a fallback may have restored an older stage.
    self.elapsed_before = float(meta.get("elapsed_s", 0.0))
    self.best_val, self.best_eval = meta.get("best_val_loss"), meta.get("best_eval")
    self.best_step = meta.get("best_step")
    self.evals_without_improvement = meta.get("evals_without_improvement", 0)
    self.last_val = None
    self.num_params = metrics_lib.count_params(state["params"])
    self.summary = {
      "name": self.config.name,
      "job": self.config.job,
      "status": "running",
      "num_params": self.num_params,
      "resumed_from": self.start_step if self.resuming else None,
      **facts,
    }
    if self.chief:
      print(
        task.startup_line(self.num_params, self.start_step)
        + (f" | resuming from step {self.start_step}" if self.resuming else ""),
        flush=True,
      )
      metrics_lib.write_summary(self.workdir, self.summary)
    self.open_logs()
    return state

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

  def open_logs(self) -> None:
    tc, task = self.tc, self.task
    self.tracker = track_lib.make_tracker(self.config, self.workdir, enabled=self.chief)
    self.tracker.log_params(self.config)
    self.tracker.log_artifact(self.workdir / "config.json")
    resume_step = self.start_step if self.resuming else None
    self.writer = metrics_lib.MetricsWriter(
      self.workdir, resume_step=resume_step, enabled=self.chief
    )
    self.hash_log = metrics_lib.MetricsWriter(
      self.workdir,
      resume_step=resume_step,
      enabled=self.chief and tc.log_batch_hashes,
      filename="batch_hashes.jsonl",
    )
    if not self.resuming and task.record_extras():
      self.log_record({"step": 0, **self.units(0)})
    self.bar = tqdm(
      total=self.shape.steps,
      initial=self.start_step,
      disable=not self.chief,
      unit="step",
      dynamic_ncols=True,
      desc=self.config.name,
    )
    self.lagged = metrics_lib.LaggedMetrics(
      total_steps=self.shape.steps,
      log_every=tc.log_every,
      per_step=self.shape.per_step,
      unit=self.shape.unit,
      last_good_step=self.checkpointer.latest_step,
      bar=self.bar,
      write=self.log_record,
    )

  # --- the loop ------------------------------------------------------------------------

  def train(self, state):
    """Steps until `shape.steps`, early stop or a stop request; closes the logs."""
    self.step, self.stopped_early, self.interrupted = self.start_step, False, None
    self.status = "FAILED"
    try:
      while self.step < self.shape.steps:
        state = self.one_step(state)
        state, done = self.after_step(state)
        if done:
          break
      self.lagged.flush()
      self.status = "KILLED" if self.interrupted else "FINISHED"
    finally:
      self.close_loop()
    return state

  def step_fn(self, jitted, state, batch):
    """The compiled step; the first time a step function is seen, its memory is checked."""
    entry = self.compiled.get(id(jitted))
    if entry is None:
      compiled = jitted.lower(state, batch).compile()
      memory.check_step_fits(compiled, self.config, float(self.tc.memory_limit_gib))
      entry = self.compiled[id(jitted)] = (jitted, compiled)
    return entry[1]

  def one_step(self, state):
    """Runs optimizer step `self.step + 1` and dispatches its metrics."""
    task, tc, step = self.task, self.tc, self.step
    host_batch = task.next_batch(step)
    if tc.log_batch_hashes:
      self.hash_log.write({"step": step + 1, "hash": batch_hash(host_batch)})
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
    self.step = step + 1
    self.lagged.dispatched(self.step, device_metrics)
    return state

  def after_step(self, state):
    """Hooks, evaluation, patience, checkpoint and stop requests after a step; returns
    (state, whether the loop ends here)."""
    step, tc, shape = self.step, self.tc, self.shape
    due = [h for h in self.task.hooks if h.due(step)] if step < shape.steps else []
    is_eval = bool(shape.eval_every and step % shape.eval_every == 0) or step == shape.steps
    is_save = bool(tc.checkpoint_every and step % tc.checkpoint_every == 0) or (step == shape.steps)
    stop_here = self.stop_at_step is not None and step >= self.stop_at_step
    # With several processes, all agree on a stop signal any of them received.
    received = mesh_lib.agreed_stop_signal(self.stop.received, step, tc.stop_check_every)
    if due or is_eval or is_save or received or stop_here:
      self.lagged.flush()  # Never switch, evaluate or save a state whose loss was not finite.
    if due:
      state = self.switch_model(due, state)
    elif is_eval:
      self.run_eval(step, state)
      goal = self.task.goal_reached(self.last_eval)
      if goal:
        self.stopped_early = True
        self.say(f"Goal reached at step {step}: {goal}.")
      elif tc.patience and self.evals_without_improvement >= tc.patience:
        self.stopped_early = True
        self.say(f"Early stop at step {step}: no improvement in {tc.patience} evaluations.")
    if is_save or self.stopped_early or received or stop_here:
      self.checkpointer.save(step, state, self.task.train_iter, self.meta(step))
    if received or stop_here:
      self.interrupted = received or "stop_at_step"
      self.say(
        f"Received {self.interrupted}: saved checkpoint {step}; re-run the same command to resume."
      )
      return state, True
    return state, self.stopped_early

  def switch_model(self, hooks: list[ModelSwitch], state):
    """Applies the due `ModelSwitch` hooks; the new model starts a fresh best slot."""
    step = self.step
    for hook in hooks:
      state = hook.apply(state, step)
    self.write_config(resuming=True)
    self.log_record({"step": step, **self.units(step)})
    self.bar.set_description(
      " ".join([self.config.name] + [f"{k} {v}" for k, v in self.task.record_extras().items()])
    )
    self.best_val, self.evals_without_improvement = None, 0
    self.run_eval(step, state)  # Refreshes the best slot with the new model.
    self.lagged.restart_clock()  # Compilation is not throughput.
    return state

  def run_eval(self, step: int, state) -> None:
    result = self.task.evaluate(state["params"])
    self.last_eval, self.last_val = result, result["val_loss"]
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
        **self.units(step),
      }
    )
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    self.say(
      f"step {step}: {shown} (best val_loss {self.best_val:.4f}"
      + (f", {self.task.reference}" if self.task.reference else "")
      + ")"
    )

  def close_loop(self) -> None:
    self.bar.close()
    self.writer.close()
    self.hash_log.close()
    self.checkpointer.close()
    if self.status == "FAILED":
      if self.chief:
        metrics_lib.write_summary(
          self.workdir,
          {**self.summary, "status": "failed", "steps": self.step, "elapsed_s": self.elapsed()},
        )
      self.tracker.close("FAILED")

  # --- end -----------------------------------------------------------------------------

  def end(self, state) -> RunResult:
    """Test split, the job's finish, summary.json and the report; returns the result."""
    try:
      test = None if self.interrupted else self.run_test(state)
      finished = dict(self.task.finish(state, self.interrupted is not None, self.best_eval, test))
      artifacts = finished.pop("artifacts", ())
      self.summary.update(finished)
      final_train = self.final_figures()
      self.summary.update(
        status=self.outcome(),
        steps=self.step,
        final_train_loss=final_train,
        best_val_loss=self.best_val,
        final_val_loss=self.last_val,
        best_step=self.best_step,
        elapsed_s=self.elapsed(),
        **self.units(self.step),
      )
      if self.chief:
        self.tracker.log_artifact(metrics_lib.write_summary(self.workdir, self.summary))
        for name in artifacts:
          self.tracker.log_artifact(self.workdir / name)
        self.log_report()
    except BaseException:
      self.status = "FAILED"
      if self.chief:  # summary.json must not stay "running".
        metrics_lib.write_summary(self.workdir, {**self.summary, "status": "failed"})
      raise
    finally:
      self.tracker.close(self.status)
    return self.result(test)

  def outcome(self) -> str:
    if self.interrupted:
      return "interrupted"
    return "stopped_early" if self.stopped_early else "finished"

  def run_test(self, state) -> dict | None:
    test = self.task.test(self.best_params(state))
    if test:
      self.summary.update(test)
      self.say(
        "test: "
        + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
        + " (best-validation parameters)"
      )
    return test

  def final_figures(self) -> float | None:
    """The last train loss (and sets the last val loss when nothing was left to train)."""
    final_train = self.lagged.last and self.lagged.last["train_loss"]
    if self.resuming and self.step == self.start_step:  # The logged figures stand.
      records = metrics_lib.read_metrics(self.workdir)
      final_train = next((r["train_loss"] for r in reversed(records) if "train_loss" in r), None)
      self.last_val = next((r["val_loss"] for r in reversed(records) if "val_loss" in r), None)
    return final_train

  def result(self, test: dict | None) -> RunResult:
    result_type, s = self.task.result_type, self.summary
    return result_type(
      workdir=self.workdir,
      status=s["status"],
      step=self.step,
      final_train_loss=s["final_train_loss"],
      best_val_loss=self.best_val,
      final_val_loss=self.last_val,
      best_step=self.best_step,
      stopped_early=self.stopped_early,
      interrupted=self.interrupted is not None,
      num_params=self.num_params,
      tokens_per_s=self.lagged.throughput,
      resumed_from=s["resumed_from"],
      elapsed_s=s["elapsed_s"],
      best_eval=self.best_eval,
      test=test,
      summary=s,
      **{name: s[name] for name in result_type.job_fields()},
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
