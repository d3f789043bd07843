"""Experiment tracking: mirror a run's config, metrics and artifacts to MLflow.

`metrics.jsonl` in the workdir is always written and stays the source of truth; a
tracker mirrors it. `make_tracker(config, workdir)` returns a no-op `Tracker` unless
`track.mlflow` is on, then an `MlflowTracker` that logs into

* `MLFLOW_TRACKING_URI` when it is set (e.g. a `mlflow server`), else
* a local SQLite store next to the workdir: `<workdir>/../mlflow.db`, artifacts in
  `<workdir>/../mlartifacts/` (`mlflow ui --backend-store-uri sqlite:///<that file>`).

The MLflow run id is kept in `<workdir>/mlflow_run.json` (one per tracking URI), so a
resumed run logs into the same MLflow run. Tracking never stops training: a failed call warns once, the
tracker buffers what it could not send, and retries after `retry_after_s`.

Command line (log finished runs that trained without tracking, e.g. offline)::

  python -m llmjax.track RUN_DIR... [--experiment=NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import sys
import time
import warnings
from typing import Any

import ml_collections

from llmjax.util import errors
from llmjax.util import fileio

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
# Tracking calls run inside the training loop: fail fast, the tracker retries later.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_BUFFERED_METRICS = 200_000
_PARAM_VALUE_LIMIT = 6000


class TrackingWarning(UserWarning):
  """A tracking call failed; training goes on and metrics.jsonl has everything."""


class Tracker:
  """Does nothing: what runs when tracking is off (and on non-chief processes)."""

  active = False  # True when calls reach a tracking backend.

  def log_params(self, config: ml_collections.ConfigDict | dict) -> None:
    """Records the flattened config (`model.n_layer` -> 6) as run parameters."""

  def log_metrics(self, record: dict, step: int) -> None:
    """Records every numeric field of a metrics.jsonl record except `step`, at `step`."""

  def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Uploads a file or a directory's files (under `artifact_path`)."""

  def log_text(self, text: str, name: str) -> None:
    """Uploads `text` as the artifact file `name`."""

  def close(self, status: str = "FINISHED") -> None:
    """Flushes what is buffered and ends the run (FINISHED, FAILED or KILLED)."""


def flatten_params(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, str]:
  """{'model.n_layer': '6', ...}: nested config values as strings, sorted by key."""
  items = config.items() if hasattr(config, "items") else dict(config).items()
  out = {}
  for key, value in items:
    name = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten_params(value, name + "."))
    else:
      out[name] = str(value)[:_PARAM_VALUE_LIMIT]
  return dict(sorted(out.items()))


def numeric_metrics(record: dict) -> dict[str, float]:
  """The finite numeric fields of a record, without `step` (MLflow keeps step apart)."""
  out = {}
  for key, value in record.items():
    if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if math.isfinite(value):
      out[key] = float(value)
  return out


def tracking_uri(workdir: str | os.PathLike[str]) -> str:
  """`MLFLOW_TRACKING_URI` if set, else the SQLite store beside the workdir."""
  uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
  if uri:
    return uri
  return "sqlite:///" + str(pathlib.Path(workdir).absolute().parent / "mlflow.db")


def _local_artifact_root(uri: str) -> str | None:
  """Artifact location for experiments created in a local SQLite store (else the
  server's default): `mlartifacts/` beside the database file."""
  if not uri.startswith("sqlite:///"):
    return None
  return (pathlib.Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()


class MlflowTracker(Tracker):
  """Logs one training run to one MLflow run.

  Every call is buffered and sent in order; the MLflow run is created (or, on resume,
  reopened) by the first send that succeeds. When a send fails the tracker warns once,
  keeps the buffer, and tries again after `retry_after_s`; `close()` makes a last try.

  Args:
    workdir: the run directory (`mlflow_run.json` goes there).
    experiment: MLflow experiment name (created if missing).
    run_name: MLflow run name.
    uri: tracking URI; default `tracking_uri(workdir)`.
    tags: extra run tags.
    retry_after_s: pause after a failed send.
  """

  active = True

  def __init__(self, workdir: str | os.PathLike[str], experiment: str, run_name: str, *,
               uri: str | None = None, tags: dict[str, str] | None = None,
               retry_after_s: float = 60.0):
    self.workdir = pathlib.Path(workdir).absolute()
    self.experiment = experiment
    self.run_name = run_name
    self.uri = uri or tracking_uri(self.workdir)
    self.tags = {"llmjax.workdir": str(self.workdir), **(tags or {})}
    self.retry_after_s = retry_after_s
    self.run_id: str | None = None
    self.client = None
    self._ops: list[tuple[str, Any]] = []
    self._n_metrics = 0
    self._paused_until = 0.0
    self._failing = False
    self._known_params: dict[str, str] = {}

  # Public interface: queue, then try to send.

  def log_params(self, config) -> None:
    self._ops.append(("params", flatten_params(config)))
    self._send()

  def log_metrics(self, record: dict, step: int) -> None:
    values = numeric_metrics(record)
    if not values:
      return
    if self._n_metrics + len(values) > _MAX_BUFFERED_METRICS:
      self._drop_oldest_metrics()
    self._ops.append(("metrics", (int(step), int(time.time() * 1000), values)))
    self._n_metrics += len(values)
    self._send()

  def log_artifact(self, path, artifact_path=None) -> None:
    self._ops.append(("artifact", (str(path), artifact_path)))
    self._send()

  def log_text(self, text: str, name: str) -> None:
    self._ops.append(("text", (text, name)))
    self._send()

  def close(self, status: str = "FINISHED") -> None:
    self._paused_until = 0.0
    self._ops.append(("status", status))
    self._send()
    if self._ops:
      warnings.warn(f"MLflow at {self.uri} is unreachable: {len(self._ops)} tracking "
                    f"call(s) of {self.workdir.name} were not logged. metrics.jsonl has "
                    f"everything: send it later with python -m llmjax.track {self.workdir}",
                    TrackingWarning, stacklevel=2)

  # Sending.

  def _send(self) -> None:
    if not self._ops or time.monotonic() < self._paused_until:
      return
    try:
      self._open()
      while self._ops:
        kind, payload = self._ops[0]
        if kind == "metrics":
          self._send_metrics()
          continue
        getattr(self, f"_send_{kind}")(payload)
        self._ops.pop(0)
    except Exception as e:  # noqa: BLE001 - any tracking failure must not stop training.
      self._paused_until = time.monotonic() + self.retry_after_s
      if not self._failing:
        warnings.warn(
            f"MLflow tracking to {self.uri} failed ({type(e).__name__}: {str(e)[:300]}). "
            f"Training goes on; the tracker retries every {self.retry_after_s:.0f} s and "
            f"metrics.jsonl has everything. Check MLFLOW_TRACKING_URI or start the "
            f"server.", TrackingWarning, stacklevel=3)
      self._failing = True
    else:
      if self._failing:
        log.warning("MLflow tracking to %s works again; buffered calls were sent.", self.uri)
      self._failing = False

  def _open(self) -> None:
    if self.run_id is not None:
      return
    for key, value in _HTTP_DEFAULTS.items():
      os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient  # Imported here: mlflow (optional: tracking).
    if self.uri.startswith("sqlite:///"):
      pathlib.Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=self.uri)
    saved = _read_run_file(self.workdir).get(self.uri)
    run_id = None
    if saved:
      try:
        run = client.get_run(saved["run_id"])
      except Exception:  # noqa: BLE001 - deleted or unknown run: start a new one.
        warnings.warn(f"MLflow run {saved['run_id']} of {self.workdir} is gone from "
                      f"{self.uri}; logging into a new run.", TrackingWarning, stacklevel=4)
      else:
        run_id = run.info.run_id
        self._known_params = dict(run.data.params)
        client.update_run(run_id, status="RUNNING")
    if run_id is None:
      experiment = client.get_experiment_by_name(self.experiment)
      if experiment is None:
        experiment_id = client.create_experiment(
            self.experiment, artifact_location=_local_artifact_root(self.uri))
      else:
        experiment_id = experiment.experiment_id
      run_id = client.create_run(experiment_id, run_name=self.run_name,
                                 tags=self.tags).info.run_id
      _write_run_file(self.workdir, self.uri, {"run_id": run_id, "experiment_id": experiment_id})
    self.client, self.run_id = client, run_id

  def _send_params(self, params: dict[str, str]) -> None:
    from mlflow.entities import Param  # Imported here: mlflow (optional: tracking).
    # MLflow params are immutable: on resume send only new keys; record changed values
    # (e.g. a longer train.steps) as tags.
    new = {k: v for k, v in params.items() if k not in self._known_params}
    changed = {k: v for k, v in params.items()
               if k in self._known_params and self._known_params[k] != v}
    items = [Param(k, v) for k, v in new.items()]
    for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
      self.client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])
    for key, value in changed.items():
      self.client.set_tag(self.run_id, f"resumed_with.{key}", value)
    self._known_params.update(new)

  def _send_metrics(self) -> None:
    """Sends the run of consecutive metric records at the head of the queue."""
    from mlflow.entities import Metric  # Imported here: mlflow (optional: tracking).
    n_ops, batch = 0, []
    for kind, payload in self._ops:
      if kind != "metrics":
        break
      step, timestamp, values = payload
      if batch and len(batch) + len(values) > _MAX_METRICS_PER_BATCH:
        break
      batch += [Metric(k, v, timestamp, step) for k, v in values.items()]
      n_ops += 1
    self.client.log_batch(self.run_id, metrics=batch)
    del self._ops[:n_ops]
    self._n_metrics -= len(batch)

  def _send_artifact(self, payload) -> None:
    path, artifact_path = payload
    if os.path.isdir(path):
      self.client.log_artifacts(self.run_id, path, artifact_path)
    elif os.path.exists(path):
      self.client.log_artifact(self.run_id, path, artifact_path)

  def _send_text(self, payload) -> None:
    self.client.log_text(self.run_id, *payload)

  def _send_status(self, status: str) -> None:
    self.client.set_terminated(self.run_id, status=status)

  def _drop_oldest_metrics(self) -> None:
    for i, (kind, payload) in enumerate(self._ops):
      if kind == "metrics":
        del self._ops[i]
        self._n_metrics -= len(payload[2])
        return


def _read_run_file(workdir: pathlib.Path) -> dict[str, dict]:
  """{tracking URI: {"run_id": ..., "experiment_id": ...}} of a workdir."""
  try:
    return json.loads((workdir / RUN_FILE).read_text())
  except (OSError, ValueError):
    return {}


def run_id_for(workdir: str | os.PathLike[str], uri: str | None = None) -> str | None:
  """The MLflow run id a workdir logs into at `uri` (default `tracking_uri(workdir)`)."""
  workdir = pathlib.Path(workdir).absolute()
  return _read_run_file(workdir).get(uri or tracking_uri(workdir), {}).get("run_id")


def _write_run_file(workdir: pathlib.Path, uri: str, info: dict) -> None:
  runs = {**_read_run_file(workdir), uri: info}
  fileio.atomic_write_json(workdir / RUN_FILE, runs, sort_keys=True)


def make_tracker(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str], *,
                 enabled: bool = True) -> Tracker:
  """The tracker `config.track` asks for: MLflow when `track.mlflow`, else a no-op.

  Args:
    config: the run config (`track.mlflow`, `track.mlflow_uri`, `track.experiment`,
      `track.run_name`).
    workdir: the run directory.
    enabled: False on processes other than the chief: they never track.
  """
  track = config.get("track") or {}
  if not (enabled and track.get("mlflow", False)):
    return Tracker()
  try:
    import mlflow  # Imported here: mlflow (optional: tracking).
  except ImportError:
    warnings.warn("track.mlflow=True but MLflow is not installed; install it with "
                  "pip install -e '.[track]'. Training goes on without it.",
                  TrackingWarning, stacklevel=2)
    return Tracker()
  workdir = pathlib.Path(workdir).absolute()
  return MlflowTracker(workdir, track.get("experiment") or "llmjax",
                       track.get("run_name") or workdir.name,
                       uri=track.get("mlflow_uri") or None,
                       tags={"llmjax.config_name": str(config.get("name", ""))})


def log_finished_run(workdir: str | os.PathLike[str], experiment: str = "llmjax",
                     run_name: str = "") -> str:
  """Logs a workdir's config.json, metrics.jsonl and summary.json into MLflow.

  For runs that trained without tracking or while the server was down. A workdir that
  already has an MLflow run (`mlflow_run.json`) logs into it, sending only the steps
  that run lacks. Returns the MLflow run id; raises when MLflow cannot be reached.
  """
  workdir = pathlib.Path(workdir).absolute()
  metrics_path = workdir / "metrics.jsonl"
  if not metrics_path.is_file():
    raise errors.RunNotFoundError(f"{workdir} has no metrics.jsonl; is it a training workdir?")
  config_path = workdir / "config.json"
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  tracker = MlflowTracker(workdir, experiment, run_name or workdir.name,
                          tags={"llmjax.config_name": str(config.get("name", ""))})
  tracker._open()  # pylint: disable=protected-access
  logged = {key: max((m.step for m in tracker.client.get_metric_history(tracker.run_id, key)),
                     default=-1)
            for key in tracker.client.get_run(tracker.run_id).data.metrics}
  if config:
    tracker.log_params(config)
    tracker.log_artifact(config_path)
  for line in metrics_path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      step = int(record.get("step", 0))
      record = {k: v for k, v in record.items() if step > logged.get(k, -1)}
      tracker.log_metrics(record, step)
  for name in ("summary.json", "samples.txt"):
    tracker.log_artifact(workdir / name)
  tracker.close()
  if tracker._ops:  # pylint: disable=protected-access
    raise ConnectionError(f"MLflow at {tracker.uri} stopped answering while logging "
                          f"{workdir}; run the command again.")
  return tracker.run_id
