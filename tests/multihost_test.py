"""Multi-process training on this machine: `launch/multihost.sh --local=2` starts two CPU
processes joined by `jax.distributed` (gloo collectives); together they train exactly like
one process over the same four devices, write logs once and one checkpoint. A failing
process stops the whole launch at once."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from llmjax.config import load as config_load
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
