"""The runner's contract, held by every job (`train`, `progressive`, `classify`):

an MLflow run with the train-loss history and DIR/summary.json; a NaN at a given step stops
the run naming that step, with the last good checkpoint intact; SIGTERM saves and exits 0;
kill -9 and a rerun resume bit for bit (metrics and final state equal an uninterrupted
run's); patience stops early; a key the job never reads is refused.
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import sys

import ml_collections
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "reliability"))
import reliability_harness as h  # pylint: disable=wrong-import-position

from llmjax import jobs  # pylint: disable=wrong-import-position
from llmjax.config import load as config_load  # pylint: disable=wrong-import-position
from llmjax.data import arena  # pylint: disable=wrong-import-position
from llmjax.runs import checkpoint as ckpt_lib  # pylint: disable=wrong-import-position
from llmjax.train import runner  # pylint: disable=wrong-import-position
from llmjax.util import errors  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow
STEPS = 8
JOBS = ("train", "progressive", "classify")
COMMON = {
  "train.steps": STEPS,
  "train.checkpoint_every": 2,
  "train.eval_every": 4,
  "train.eval_batches": 1,
  "train.log_every": 1,
  "train.keep_checkpoints": 10,
  "mesh.num_devices": 1,
}
LM_DATA = {
  "data.source": "file",
  "data.tokenizer": "char",
  "model.vocab_size": 257,
  "data.max_tokens": 0,
  "data.val_fraction": 0.1,
  "model.n_head": 2,
  "model.n_embd": 16,
  "model.block_size": 16,
  "train.batch_size": 4,
  "train.sample_tokens": 0,
  "optim.warmup_steps": 2,
}
UNREAD = {"train": "data.hf_config", "progressive": "model.stage", "classify": "model.n_layer"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  base = tmp_path_factory.mktemp("contract")
  h.write_corpus(base / "corpus.txt")
  vocab = base / "tok"
  vocab.mkdir()
  (vocab / "vocab.txt").write_text(
    "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *arena.SYNTHETIC_WORDS]) + "\n"
  )
  return base


def job_config(job: str, base: pathlib.Path) -> tuple[str, dict]:
  """(config spec, dotted overrides) of a seconds-long run of `job`."""
  if job == "train":
    return "configs/shakespeare.py:smoke", {
      **LM_DATA,
      "data.path": str(base / "corpus.txt"),
      "model.n_layer": 1,
      **COMMON,
    }
  if job == "progressive":
    return "configs/progressive.py:smoke", {
      **LM_DATA,
      "data.path": str(base / "corpus.txt"),
      "model.n_layer": 2,
      "model.stage_groups": (1, 2),
      "progressive.stage_fractions": (0.5, 0.5),
      "model.lora_rank": 2,
      **COMMON,
    }
  return "configs/arena_classifier.py:smoke", {
    "classifier.tokenizer": str(base / "tok"),
    "classifier.hidden_size": 16,
    "classifier.intermediate_size": 32,
    "classifier.head_hidden": 32,
    "arena.synthetic_rows": 120,
    "train.batch_size": 8,
    **COMMON,
  }


def load(job: str, base: pathlib.Path, **extra) -> ml_collections.ConfigDict:
  spec, values = job_config(job, base)
  config = ml_collections.ConfigDict(config_load.load_config(spec).to_dict())
  config_load.apply_overrides(config, {**values, **extra})
  return config


def argv(job: str, base: pathlib.Path, workdir: pathlib.Path, **extra) -> list[str]:
  spec, values = job_config(job, base)
  values = {
    k: (str(v).replace(" ", "") if isinstance(v, tuple) else v)
    for k, v in {**values, **extra}.items()
  }
  return h.config_argv(spec, workdir, values)


def wall_clock_free(workdir: pathlib.Path) -> list[dict]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [
    {k: v for k, v in r.items() if not (k.endswith("_per_s") or k == "elapsed_s")} for r in rows
  ]


@pytest.fixture(scope="module", params=JOBS)
def runs(request, base):
  """Per job: an uninterrupted tracked run, and one killed (-9), then stopped (SIGTERM),
  then run to the end."""
  job = request.param
  store = "sqlite:///" + str(base / f"{job}-mlflow.db")
  reference = base / f"{job}-reference"
  ref = h.run(
    base, argv(job, base, reference, **{"track.mlflow": True}), env={"MLFLOW_TRACKING_URI": store}
  )
  assert ref.returncode == 0, ref.describe()
  chain = base / f"{job}-chain"
  killed = h.interrupt_at(
    h.start(base, argv(job, base, chain), faults={"step_delay": 0.3}), chain, 3, signal.SIGKILL
  )
  termed = h.interrupt_at(
    h.start(base, argv(job, base, chain), faults={"step_delay": 0.3}), chain, 5, signal.SIGTERM
  )
  final = h.run(base, argv(job, base, chain))
  return {
    "job": job,
    "store": store,
    "reference": reference,
    "chain": chain,
    "killed": killed,
    "termed": termed,
    "final": final,
  }


def test_mlflow_history_and_summary(runs):
  pytest.importorskip("mlflow")
  from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel

  client = MlflowClient(tracking_uri=runs["store"])
  experiment = client.get_experiment_by_name("llmjax")
  (run,) = client.search_runs([experiment.experiment_id])
  history = client.get_metric_history(run.info.run_id, "train_loss")
  assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
  assert run.info.status == "FINISHED"
  summary = json.loads((runs["reference"] / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["steps"] == STEPS
  assert summary["job"] == runs["job"]
  (last,) = [m.value for m in history if m.step == STEPS]
  assert summary["final_train_loss"] == pytest.approx(last)


def test_sigterm_saves_and_exits_zero(runs):
  termed = runs["termed"]
  assert termed.returncode == 0, termed.describe()
  saved = int(re.search(r"Received SIGTERM: saved checkpoint (\d+)", termed.stdout).group(1))
  assert saved >= 5
  assert runs["killed"].returncode == -signal.SIGKILL


def test_kill9_then_rerun_resumes_bit_identically(runs):
  final = runs["final"]
  assert final.returncode == 0, final.describe()
  assert "resuming from step" in final.stdout
  assert wall_clock_free(runs["chain"]) == wall_clock_free(runs["reference"])
  h.assert_trees_equal(h.load_state(runs["chain"], STEPS), h.load_state(runs["reference"], STEPS))


@pytest.mark.parametrize("job", JOBS)
def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(job, base, tmp_path):
  config = load(job, base, **{"train.debug_nan_step": 3})
  with pytest.raises(errors.TrainingError, match=r"at step 3\. .*checkpoint \(step 2\)"):
    jobs.run(config, tmp_path)
  assert ckpt_lib.finished_steps(tmp_path / "checkpoints") == [2]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "failed"


@pytest.mark.parametrize("job", JOBS)
def test_patience_stops_early(job, base, tmp_path, monkeypatch):
  evaluate = runner._Run.run_eval  # pylint: disable=protected-access
  calls = []

  def worsening(self, step, state):
    calls.append(step)
    real = self.task.evaluate
    self.task.evaluate = lambda params: {**real(params), "val_loss": float(len(calls))}
    try:
      evaluate(self, step, state)
    finally:
      self.task.evaluate = real

  monkeypatch.setattr(runner._Run, "run_eval", worsening)  # pylint: disable=protected-access
  config = load(job, base, **{"train.eval_every": 2, "train.patience": 1})
  result = jobs.run(config, tmp_path)
  # Progressive: the switch at step 4 restarts the best slot, so 6 is the first bad eval.
  assert result.stopped_early and result.step == (6 if job == "progressive" else 4)
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "stopped_early"


@pytest.mark.parametrize("job", JOBS)
def test_a_key_the_job_never_reads_is_refused(job, base):
  config = load(job, base)
  with pytest.raises(
    errors.ConfigError,
    match=rf"{UNREAD[job]} is set but config.job="
    rf"'{job}' never reads it",
  ):
    jobs.check_overrides(config, [UNREAD[job]])
  jobs.check_overrides(config, ["train.steps"])  # Read by every job.
