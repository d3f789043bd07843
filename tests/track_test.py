"""Tests for llmjax.track: the no-op tracker, MLflow logging, resume, and a server down."""

import json
import time
import warnings

import ml_collections
import pytest

from llmjax.cli import track as track_cli
from llmjax.config import schema as config_base
from llmjax.runs import track

DOWN = "http://127.0.0.1:9"  # Nothing listens on the discard port: connection refused.


def test_flatten_params_and_numeric_metrics():
  c = ml_collections.ConfigDict(
    {"name": "x", "model": {"n_layer": 2, "dtype": "float32"}, "optim": {"lr": 1e-3, "clip": None}}
  )
  assert track.flatten_params(c) == {
    "model.dtype": "float32",
    "model.n_layer": "2",
    "name": "x",
    "optim.clip": "None",
    "optim.lr": "0.001",
  }
  record = {
    "step": 3,
    "train_loss": 2.5,
    "tokens": 96,
    "ok": True,
    "name": "a",
    "val_loss": float("nan"),
  }
  assert track.numeric_metrics(record) == {"train_loss": 2.5, "tokens": 96.0}


def test_make_tracker_off_unless_asked(tmp_path, monkeypatch):
  monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
  c = config_base.base_config()
  assert type(track.make_tracker(c, tmp_path)) is track.Tracker
  c.track.mlflow = True
  assert type(track.make_tracker(c, tmp_path, enabled=False)) is track.Tracker
  pytest.importorskip("mlflow")
  t = track.make_tracker(c, tmp_path / "run")
  assert isinstance(t, track.MlflowTracker) and t.run_name == "run"
  assert t.uri == "sqlite:///" + str(tmp_path / "mlflow.db")


def test_track_mlflow_uri_names_the_server_over_the_environment(tmp_path, monkeypatch):
  # The original's users start `mlflow server --port 5000`; the key points a run at it.
  pytest.importorskip("mlflow")
  monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:1")
  c = config_base.base_config()
  c.track.mlflow = True
  c.track.mlflow_uri = "http://127.0.0.1:5000"
  assert track.make_tracker(c, tmp_path / "run").uri == "http://127.0.0.1:5000"
  c.track.mlflow_uri = ""
  assert track.make_tracker(c, tmp_path / "run").uri == "http://elsewhere:1"


def test_tracking_uri_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
  assert track.tracking_uri(tmp_path / "run") == "http://tracker:5000"
  monkeypatch.delenv("MLFLOW_TRACKING_URI")
  assert track.tracking_uri(tmp_path / "run") == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
  """One local store for the module: creating a SQLite store takes seconds."""
  return "sqlite:///" + str(tmp_path_factory.mktemp("store") / "mlflow.db")


@pytest.fixture
def mlflow_client(store_uri, monkeypatch):
  pytest.importorskip("mlflow")
  from mlflow.tracking import MlflowClient

  monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
  return MlflowClient(store_uri)


def test_run_file_keeps_one_run_per_tracking_uri(tmp_path):
  track._write_run_file(tmp_path, "sqlite:///a.db", {"run_id": "r1", "experiment_id": "1"})
  track._write_run_file(tmp_path, "http://server:5000", {"run_id": "r2", "experiment_id": "3"})
  assert track.run_id_for(tmp_path, "sqlite:///a.db") == "r1"
  assert track.run_id_for(tmp_path, "http://server:5000") == "r2"
  assert track.run_id_for(tmp_path, "http://elsewhere") is None


def history(client, run_id, key):
  return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_mlflow_logs_and_resumes_into_the_same_run(tmp_path, mlflow_client):
  workdir = tmp_path / "run1"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  config = ml_collections.ConfigDict({"name": "x", "train": {"steps": 4}})
  t = track.MlflowTracker(workdir, "resume", "run1")
  t.log_params(config)
  for step in (1, 2):
    t.log_metrics({"step": step, "train_loss": 3.0 - step, "lr": 0.1}, step)
  t.log_metrics({"step": 2, "val_loss": 2.5}, 2)
  t.log_artifact(workdir / "config.json")
  t.log_text("hello", "samples.txt")
  t.close("KILLED")
  run = mlflow_client.get_run(t.run_id)
  assert run.info.status == "KILLED" and run.info.run_name == "run1"
  assert run.data.params == {"name": "x", "train.steps": "4"}
  assert run.data.tags["llmjax.workdir"] == str(workdir)
  assert history(mlflow_client, t.run_id, "train_loss") == [(1, 2.0), (2, 1.0)]
  assert history(mlflow_client, t.run_id, "val_loss") == [(2, 2.5)]
  assert sorted(a.path for a in mlflow_client.list_artifacts(t.run_id)) == [
    "config.json",
    "samples.txt",
  ]
  assert track.run_id_for(workdir) == t.run_id
  # Resume (train.steps raised): the same MLflow run, params kept, the change as a tag.
  config.train.steps = 8
  t2 = track.MlflowTracker(workdir, "resume", "run1")
  t2.log_params(config)
  t2.log_metrics({"step": 3, "train_loss": 0.5}, 3)
  t2.close()
  assert t2.run_id == t.run_id
  run = mlflow_client.get_run(t.run_id)
  assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "4"
  assert run.data.tags["resumed_with.train.steps"] == "8"
  assert history(mlflow_client, t.run_id, "train_loss") == [(1, 2.0), (2, 1.0), (3, 0.5)]
  # A second workdir is a second run of the same experiment.
  t3 = track.MlflowTracker(tmp_path / "run2", "resume", "run2")
  t3.log_metrics({"step": 1, "train_loss": 9.0}, 1)
  t3.close()
  experiment = mlflow_client.get_experiment_by_name("resume")
  names = {r.info.run_name for r in mlflow_client.search_runs([experiment.experiment_id])}
  assert names == {"run1", "run2"}


def test_server_down_warns_fast_buffers_and_recovers(tmp_path, mlflow_client):
  t = track.MlflowTracker(tmp_path / "run", "exp", "run", uri=DOWN, retry_after_s=3600)
  start = time.monotonic()
  with pytest.warns(track.TrackingWarning, match="failed") as caught:
    t.log_params({"a": 1})
    for step in range(1, 6):
      t.log_metrics({"step": step, "train_loss": float(step)}, step)
  assert time.monotonic() - start < 10
  assert len(caught) == 1  # One warning per outage, not one per call.
  assert t.run_id is None and len(t._ops) == 6
  # The server comes back: the next call after the pause sends everything, in order.
  t.uri = track.tracking_uri(tmp_path / "run")  # The store (MLFLOW_TRACKING_URI).
  t._paused_until = 0.0
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    t.log_metrics({"step": 6, "train_loss": 6.0}, 6)
    t.close()
  assert history(mlflow_client, t.run_id, "train_loss") == [(s, float(s)) for s in range(1, 7)]
  assert mlflow_client.get_run(t.run_id).data.params == {"a": "1"}


def test_close_while_down_says_what_was_lost(tmp_path):
  pytest.importorskip("mlflow")
  t = track.MlflowTracker(tmp_path / "run", "exp", "run", uri=DOWN)
  with pytest.warns(track.TrackingWarning) as caught:
    t.log_metrics({"step": 1, "train_loss": 1.0}, 1)
    t.close()
  assert "python -m llmjax.track" in str(caught[-1].message)


def test_log_finished_run_sends_only_missing_steps(tmp_path, mlflow_client, capsys):
  workdir = tmp_path / "old"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"name": "old", "train": {"steps": 3}}))
  records = [{"step": s, "train_loss": 4.0 - s} for s in (1, 2, 3)]
  records.append({"step": 3, "val_loss": 1.5})
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert track_cli.main([str(workdir), "--experiment=backfill"]) == 0
  assert "MLflow run" in capsys.readouterr().out
  run_id = track.run_id_for(workdir)
  assert history(mlflow_client, run_id, "train_loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 4, "train_loss": 0.5}) + "\n")
  assert track.log_finished_run(workdir, "backfill") == run_id
  assert history(mlflow_client, run_id, "train_loss") == [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)]
  assert mlflow_client.get_run(run_id).data.params["name"] == "old"
  assert track_cli.main([str(tmp_path / "missing")]) == 1
  assert "no metrics.jsonl" in capsys.readouterr().err


def tiny_config(text_path, steps):
  c = config_base.base_config()
  c.name = "tiny"
  c.data.source, c.data.path, c.data.tokenizer = "file", str(text_path), "char"
  c.model.vocab_size = 257
  c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 1, 2, 16, 16
  c.train.steps, c.train.batch_size, c.train.log_every = steps, 8, 1
  c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 2, 1, 2
  c.train.sample_tokens = 0
  c.optim.warmup_steps = 1
  c.track.mlflow = True
  c.track.experiment = "tiny"
  return c


@pytest.mark.slow
def test_training_with_server_down_then_backfill_then_resume(
  tmp_path, monkeypatch, store_uri, mlflow_client
):
  from llmjax.train import lm
  from llmjax.train import metrics as metrics_lib

  text = tmp_path / "text.txt"
  text.write_text("".join(f"line {i}: the quick brown fox jumps.\n" for i in range(200)))
  workdir = tmp_path / "tiny"
  monkeypatch.setenv("MLFLOW_TRACKING_URI", DOWN)
  with pytest.warns(track.TrackingWarning):
    result = lm.train(tiny_config(text, 4), workdir)
  assert result.step == 4 and not (workdir / track.RUN_FILE).exists()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["bytes_per_token"] == pytest.approx(1.0)
  # Back online: send the finished part, then resume training into the same MLflow run.
  monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
  run_id = track.log_finished_run(workdir, "tiny")
  lm.train(tiny_config(text, 6), workdir)
  assert track.run_id_for(workdir) == run_id
  records = metrics_lib.read_metrics(workdir)
  want = [(r["step"], pytest.approx(r["train_loss"])) for r in records if "train_loss" in r]
  assert [s for s, _ in want] == [1, 2, 3, 4, 5, 6]
  assert history(mlflow_client, run_id, "train_loss") == want
  assert [s for s, _ in history(mlflow_client, run_id, "val_loss")] == [2, 4, 6]
  assert all("elapsed_s" in r for r in records)
  run = mlflow_client.get_run(run_id)
  assert run.info.status == "FINISHED" and run.data.params["model.n_embd"] == "16"
  artifacts = {a.path for a in mlflow_client.list_artifacts(run_id)}
  assert {"config.json", "summary.json", "report"} <= artifacts
