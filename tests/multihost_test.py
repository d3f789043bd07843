"""Multi-process training on this machine: `launch/multihost.sh --local=2` starts two CPU
processes joined by `jax.distributed` (gloo collectives); together they train exactly like
one process over the same four devices, write logs once and one checkpoint. A failing
process stops the whole launch at once."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from llmjax.config import load as config_load
from llmjax.parallel import mesh
from llmjax.train import lm
from llmjax.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "launch" / "multihost.sh"
TEXT = "".join(
  f"{i:03d} the quick brown fox jumps over the lazy dog; {i * 7 % 13} hens\n" for i in range(300)
)


def overrides(text_path):
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
    "train.steps": 3,
    "train.eval_every": 0,
    "train.eval_batches": 2,
    "train.checkpoint_every": 0,
    "train.log_every": 1,
    "train.sample_tokens": 0,
    "optim.learning_rate": 3e-3,
    "optim.warmup_steps": 1,
    "mesh.data": 2,
    "mesh.fsdp": 2,
    "mesh.tensor": 1,
  }


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(n, command, log_dir, timeout=300, cpu_devices=0):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  return subprocess.run(
    [
      str(LAUNCHER),
      f"--local={n}",
      f"--port={free_port()}",
      f"--log_dir={log_dir}",
      f"--cpu_devices={cpu_devices}",
      "--",
      *command,
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def train_losses(workdir):
  return [r["train_loss"] for r in metrics_lib.read_metrics(workdir) if "train_loss" in r]


@pytest.mark.slow
def test_two_processes_train_in_lockstep_like_one(tmp_path):
  text = tmp_path / "fox.txt"
  text.write_text(TEXT)
  workdir, logs = tmp_path / "two", tmp_path / "logs"
  flags = [f"--config.{k}={v}" for k, v in overrides(text).items()]
  proc = launch(
    2,
    [
      sys.executable,
      "-m",
      "llmjax.main",
      "--config=configs/shakespeare.py:smoke",
      *flags,
      f"--workdir={workdir}",
    ],
    logs,
    cpu_devices=2,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]

  # One process over the same 4 devices (a subset of this process's 8).
  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  config_load.apply_overrides(config, {**overrides(text), "mesh.num_devices": 4})
  reference = lm.train(config, tmp_path / "one")
  np.testing.assert_allclose(
    train_losses(workdir), train_losses(tmp_path / "one"), rtol=0, atol=1e-5
  )
  val = [r["val_loss"] for r in metrics_lib.read_metrics(workdir) if "val_loss" in r]
  assert val == [pytest.approx(reference.final_val_loss, abs=1e-5)]

  # Process 0 alone logs; both saved their part of the one checkpoint.
  log0 = (logs / "process_0.log").read_text()
  log1 = (logs / "process_1.log").read_text()
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1}" in log0 and "Done: step 3" in log0
  assert "llmjax:" not in log1 and "Done:" not in log1
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3"]
  data_states = sorted(p.name for p in (workdir / "checkpoints" / "3" / "data").glob("*.json"))
  assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]
  assert len(train_losses(workdir)) == 3


def test_a_failing_process_stops_the_launch_at_once(tmp_path):
  pid_file = tmp_path / "pid0"
  script = (
    f'if [ "$LLMJAX_PROCESS_ID" = 1 ]; then sleep 1; echo "process one broke" >&2; '
    f"exit 3; fi; echo $$ > {pid_file}; exec sleep 120"
  )
  start = time.monotonic()
  proc = launch(2, ["bash", "-c", script], tmp_path / "logs", timeout=60)
  assert time.monotonic() - start < 30
  assert proc.returncode == 3
  assert "process 1 failed (exit code 3)" in proc.stderr
  assert "process one broke" in proc.stderr
  deadline = time.monotonic() + 5  # The survivor has been sent SIGTERM.
  pid = int(pid_file.read_text())
  while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
    time.sleep(0.1)
  assert not os.path.exists(f"/proc/{pid}")


def test_launcher_rejects_bad_usage(tmp_path):
  proc = launch(0, ["true"], tmp_path / "logs", timeout=30)
  assert proc.returncode == 2 and "exactly one of --hosts" in proc.stderr


def truncate_arrays(step_dir):
  """Cuts every array data file of a checkpoint's state to half its size."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step_and_process_0_sets_aside(tmp_path):
  """SIGTERM reaches process 1 alone: both stop at the next agreed step (every
  `train.stop_check_every`), save one checkpoint and exit 0. Resuming after that
  checkpoint is truncated falls back to the previous one in both processes, and process 0
  alone renames it `<step>.corrupt` (the resumed run, two steps shorter, has nothing left
  to train)."""
  text = tmp_path / "fox.txt"
  text.write_text(TEXT)
  workdir, logs = tmp_path / "two", tmp_path / "logs"
  settings = {
    **overrides(text),
    "train.steps": 400,
    "train.checkpoint_every": 2,
    "train.keep_checkpoints": 3,
    "train.stop_check_every": 4,
  }
  flags = [f"--config.{k}={v}" for k, v in settings.items()]
  pid_dir = tmp_path / "pids"
  pid_dir.mkdir()
  command = (
    f'echo $$ > {pid_dir}/$LLMJAX_PROCESS_ID; exec "$0" -m llmjax.main '
    '--config=configs/shakespeare.py:smoke "$@"'
  )
  env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  launcher = [str(LAUNCHER), "--local=2", f"--port={free_port()}", "--cpu_devices=2"]
  run = [*launcher, f"--log_dir={logs}", "--", "bash", "-c", command, sys.executable]
  proc = subprocess.Popen(
    [*run, *flags, f"--workdir={workdir}"],
    env=env,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (
      not (workdir / "metrics.jsonl").exists() or len(train_losses(workdir)) < 5
    ):
      time.sleep(0.2)
    os.kill(int((pid_dir / "1").read_text()), signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-3000:]
  log0 = (logs / "process_0.log").read_text()
  stopped = re.findall(r"Received SIGTERM: saved checkpoint (\d+)", log0)
  assert len(stopped) == 1, log0[-3000:]
  step = int(stopped[0])
  assert step % 4 == 0 and 5 <= step < 400
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [
    step - 4,
    step - 2,
    step,
  ]
  data = sorted(p.name for p in (workdir / "checkpoints" / str(step) / "data").glob("*.json"))
  assert data == ["process_0-of-2.json", "process_1-of-2.json"]

  truncate_arrays(workdir / "checkpoints" / str(step))
  flags = [f"--config.{k}={v}" for k, v in {**settings, "train.steps": step - 2}.items()]
  resumed = subprocess.run(
    [*launcher, f"--log_dir={tmp_path}/logs2", "--", "bash", "-c", command, sys.executable]
    + [*flags, f"--workdir={workdir}"],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  bad = workdir / "checkpoints" / str(step)
  log0 = (tmp_path / "logs2" / "process_0.log").read_text()
  log1 = (tmp_path / "logs2" / "process_1.log").read_text()
  assert f"resuming from step {step - 2}" in log0
  assert f"the unreadable {bad} is kept as {bad}.corrupt" in log0
  assert "is kept as" not in log1  # Process 0 alone renamed it.
  names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert names == sorted([str(step - 4), str(step - 2), f"{step}.corrupt"]), names


def test_unreachable_coordinator_is_one_line_after_the_timeout(tmp_path):
  env = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "JAX_PLATFORMS": "cpu",
    "LLMJAX_INIT_TIMEOUT": "2",
  }
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "llmjax.main",
      "--config=configs/shakespeare.py:smoke",
      f"--workdir={tmp_path / 'w'}",
      f"--coordinator=127.0.0.1:{free_port()}",
      "--num_processes=2",
      "--process_id=1",
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("Error: process 1 of 2 could not join"), lines
  assert "within 2 s" in lines[0] and "LLMJAX_INIT_TIMEOUT" in lines[0]
  assert not (tmp_path / "w").exists()


def test_slurm_step_gives_coordinator_and_keeps_all_devices_of_a_one_task_node():
  env = {
    "SLURM_JOB_ID": "4101",
    "SLURM_STEP_NODELIST": "gpu[007-009,012]",
    "SLURM_STEP_TASKS_PER_NODE": "1(x4)",
    "SLURM_NODEID": "2",
    "SLURM_LOCALID": "0",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "2",
  }
  # JAX's port: 61440 + job id mod 4096.
  assert mesh.slurm_distributed_args(env) == ("gpu007:61445", 4, 2, None)
  two_per_node = {
    **env,
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_NODEID": "1",
    "SLURM_LOCALID": "1",
  }
  assert mesh.slurm_distributed_args(two_per_node)[3] == [1]
  with_port = {**env, "JAX_COORDINATOR_PORT": "1234", "SLURM_STEP_NODELIST": "a,b"}
  assert mesh.slurm_distributed_args(with_port)[0] == "a:1234"
  assert mesh.slurm_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
  assert mesh.first_slurm_host("node12") == "node12"
