"""launch/slurm.sbatch under a real SLURM: a one-node cluster on this machine
(`launch/slurm_local.sh`), two tasks with four CPU devices each. They train like one
process over eight devices, and `scancel --signal=TERM` stops both at one step with one
checkpoint.

Opt-in: runs with LLMJAX_SLURM_TEST=1 (`bash launch/slurm_local.sh test` sets it and
starts the cluster); skipped when SLURM is not installed or not asked for.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from llmjax.config import load as config_load
from llmjax.train import lm
from llmjax.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCAL_SLURM = ROOT / "launch" / "slurm_local.sh"
TEXT = "".join(
  f"{i:03d} the quick brown fox jumps over the lazy dog; {i * 7 % 13} hens\n" for i in range(300)
)
MISSING = [
  c
  for c in ("sbatch", "scancel", "scontrol", "slurmctld", "slurmd", "munged")
  if shutil.which(c) is None
]

pytestmark = [
  pytest.mark.skipif(
    bool(MISSING),
    reason=f"SLURM not installed ({', '.join(MISSING)} missing): "
    "bash launch/slurm_local.sh install",
  ),
  pytest.mark.skipif(
    os.environ.get("LLMJAX_SLURM_TEST") != "1",
    reason="starts SLURM daemons: run with bash launch/slurm_local.sh test",
  ),
]


def overrides(text_path, steps):
  return {
    "data.source": "file",
    "data.path": str(text_path),
    "data.tokenizer": "char",
    "model.vocab_size": 257,
    "model.n_embd": 32,
    "model.n_head": 4,
    "model.n_layer": 2,
    "model.block_size": 16,
    "train.batch_size": 8,
    "train.steps": steps,
    "train.eval_every": 0,
    "train.eval_batches": 2,
    "train.checkpoint_every": 0,
    "train.log_every": 1,
    "train.sample_tokens": 0,
    "train.stop_check_every": 5,
    "optim.learning_rate": 3e-3,
    "optim.warmup_steps": 1,
    "mesh.data": 4,
    "mesh.fsdp": 2,
    "mesh.tensor": 1,
  }


@pytest.fixture(scope="module")
def slurm_env():
  env = {**os.environ, "SLURM_CONF": os.environ.get("SLURM_CONF", "/tmp/llmjax-slurm/slurm.conf")}
  env["SLURM_LOCAL_DIR"] = str(pathlib.Path(env["SLURM_CONF"]).parent)
  started = subprocess.run(
    ["bash", str(LOCAL_SLURM), "start"], env=env, capture_output=True, text=True, timeout=120
  )
  assert started.returncode == 0, started.stdout + started.stderr
  return env


def submit(env, tmp_path, steps, workdir):
  """sbatch launch/slurm.sbatch: 2 tasks on the one node, 4 CPU devices each."""
  text = tmp_path / "fox.txt"
  text.write_text(TEXT)
  env = {
    **env,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
    "PYTHON": str(ROOT / ".venv" / "bin" / "python"),
  }
  flags = [f"--config.{k}={v}" for k, v in overrides(text, steps).items()]
  out = subprocess.run(
    [
      "sbatch",
      "--parsable",
      "--nodes=1",
      "--ntasks-per-node=2",
      "--cpus-per-task=1",
      "--gpus-per-node=0",
      "--time=5",  # Minutes: a job this test loses track of ends on its own.
      f"--output={tmp_path}/slurm-%j.out",
      "launch/slurm.sbatch",
      "--config=configs/shakespeare.py:smoke",
      *flags,
      f"--workdir={workdir}",
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  )
  job = out.stdout.strip().split(";")[0]
  return job, tmp_path / f"slurm-{job}.out"


def job_state(env, job) -> tuple[str, str]:
  shown = subprocess.run(
    ["scontrol", "show", "job", job], env=env, capture_output=True, text=True
  ).stdout
  state = re.search(r"JobState=(\S+)", shown)
  code = re.search(r"ExitCode=(\S+)", shown)
  return (state.group(1) if state else "GONE"), (code.group(1) if code else "")


def wait_for(env, job, timeout=300) -> tuple[str, str]:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    state, code = job_state(env, job)
    if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
      return state, code
    time.sleep(1)
  subprocess.run(["scancel", job], env=env)
  pytest.fail(f"SLURM job {job} still {state} after {timeout} s")


def train_losses(workdir):
  if not (workdir / "metrics.jsonl").exists():
    return []
  return [r["train_loss"] for r in metrics_lib.read_metrics(workdir) if "train_loss" in r]


def test_two_slurm_tasks_train_like_one_process_on_eight_devices(slurm_env, tmp_path):
  workdir = tmp_path / "slurm"
  job, log = submit(slurm_env, tmp_path, 6, workdir)
  try:
    state, code = wait_for(slurm_env, job)
  finally:
    subprocess.run(["scancel", job], env=slurm_env)
  output = log.read_text()
  assert (state, code) == ("COMPLETED", "0:0"), output[-3000:]
  assert "mesh {'data': 4, 'fsdp': 2, 'tensor': 1}" in output and "Done: step 6" in output

  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  config_load.apply_overrides(config, overrides(tmp_path / "fox.txt", 6))
  reference = lm.train(config, tmp_path / "one")  # One process, this process's 8 devices.
  slurm_losses, one_losses = train_losses(workdir), train_losses(tmp_path / "one")
  print(f"\nSLURM job {job}, 2 tasks x 4 CPU devices: train losses {slurm_losses}")
  print(f"1 process x 8 CPU devices:            train losses {one_losses}")
  np.testing.assert_allclose(slurm_losses, one_losses, rtol=0, atol=1e-5)
  val = [r["val_loss"] for r in metrics_lib.read_metrics(workdir) if "val_loss" in r]
  assert val == [pytest.approx(reference.final_val_loss, abs=1e-5)]
  data_states = sorted(p.name for p in (workdir / "checkpoints" / "6" / "data").glob("*.json"))
  assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]


def test_scancel_signal_term_stops_both_tasks_at_one_step(slurm_env, tmp_path):
  workdir = tmp_path / "slurm"
  job, log = submit(slurm_env, tmp_path, 3000, workdir)
  try:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(train_losses(workdir)) < 3:
      time.sleep(0.5)
    assert len(train_losses(workdir)) >= 3, log.read_text()[-3000:] if log.exists() else job
    subprocess.run(["scancel", "--signal=TERM", job], env=slurm_env, check=True)
    logged = len(train_losses(workdir))
    state, code = wait_for(slurm_env, job)
  finally:
    subprocess.run(["scancel", job], env=slurm_env)
  output = log.read_text()
  assert (state, code) == ("COMPLETED", "0:0"), output[-3000:]

  saved = re.findall(r"Received SIGTERM: saved checkpoint (\d+)", output)
  assert len(saved) == 1, output[-3000:]
  step = int(saved[0])
  print(
    f"\nSLURM job {job}: scancel --signal=TERM when step {logged} was logged; both tasks "
    f"stopped at step {step}"
  )
  assert step % 5 == 0 and step >= logged  # train.stop_check_every=5.
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(step)]
  data_states = sorted(
    p.name for p in (workdir / "checkpoints" / str(step) / "data").glob("*.json")
  )
  assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "interrupted" and summary["steps"] == step
