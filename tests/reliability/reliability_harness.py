"""Tiny trainings in subprocesses, with faults injected, for the reliability tests.

Imported by the tests, this module starts `python -m llmjax.main` runs of a seconds-long
config (char tokenizer, one 16-wide block, a 1 KB corpus) and reads what they leave in
the workdir. Run as a script, it *is* `python -m llmjax.main`, with fault hooks installed
first from the JSON in $LLMJAX_TEST_FAULTS:

  {"step_delay": 0.1}      sleep before each step (time for a test to send a signal)
  {"kill_in_save": 8}      SIGKILL itself while checkpoint 8 is being written (its
                           temporary directory exists, the state item is half done)
  {"enospc_in_save": 8}    raise OSError(ENOSPC) inside the write of checkpoint 8

Every subprocess shares one persistent JAX compilation cache, so only the first run pays
for compiling the step.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
FAULTS_ENV = "LLMJAX_TEST_FAULTS"
STEPS = 20
CHECKPOINT_EVERY = 4
EVAL_EVERY = 5  # Not a multiple of CHECKPOINT_EVERY: a kill can fall between the two.

# The tiny run: ~1 ms per step; 20 steps cross one epoch of the corpus below.
TINY = {
  "data.source": "file",
  "data.tokenizer": "char",
  "model.vocab_size": 257,
  "model.n_layer": 1,
  "model.n_head": 2,
  "model.n_embd": 16,
  "model.block_size": 16,
  "train.batch_size": 4,
  "train.steps": STEPS,
  "train.checkpoint_every": CHECKPOINT_EVERY,
  "train.eval_every": EVAL_EVERY,
  "train.eval_batches": 1,
  "train.keep_checkpoints": 10,
  "train.log_every": 1,
  "train.sample_tokens": 0,
  "train.log_batch_hashes": True,
  "optim.learning_rate": 3e-3,
  "optim.warmup_steps": 2,
}


def write_corpus(path: pathlib.Path, n_lines: int = 40, seed: int = 0) -> pathlib.Path:
  """A small deterministic English-like text (about 25 characters a line)."""
  words = (
    "the king shall speak of love and war to all his men while rain falls on old stone towers"
  ).split()
  rng = random.Random(seed)
  path.write_text(
    "".join(" ".join(rng.choice(words) for _ in range(5)) + "\n" for _ in range(n_lines))
  )
  return path


def subprocess_env(base: pathlib.Path, devices: int = 1, faults: dict | None = None) -> dict:
  """Environment of a run: this checkout first, offline, shared caches, `devices` CPUs."""
  env = dict(os.environ)
  flags = [
    f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f
  ]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env.update(
    {
      "XLA_FLAGS": " ".join(flags),
      "JAX_PLATFORMS": "cpu",
      "PYTHONPATH": str(REPO),
      "LLMJAX_CACHE": str(base / "llmjax-cache"),
      "LLMJAX_NO_FETCH": "1",
      # The session's cache when the test run has one: every file's runs share it.
      "JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", str(base / "jax-cache")
      ),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
      "TQDM_DISABLE": "1",
    }
  )
  env.pop(FAULTS_ENV, None)
  if faults:
    env[FAULTS_ENV] = json.dumps(faults)
  return env


def train_argv(corpus: pathlib.Path, workdir: pathlib.Path, **overrides) -> list[str]:
  """`python -m llmjax.main` arguments of the tiny run (`section__key=value` overrides)."""
  values = {
    **TINY,
    "data.path": str(corpus),
    **{k.replace("__", "."): v for k, v in overrides.items()},
  }
  return config_argv("configs/shakespeare.py:smoke", workdir, values)


def config_argv(spec: str, workdir: pathlib.Path, values: dict) -> list[str]:
  """`python -m llmjax.main` arguments of config `spec` with dotted-key `values`."""
  return [f"--config={spec}", f"--workdir={workdir}"] + [
    f"--config.{k}={v}" for k, v in values.items()
  ]


@dataclasses.dataclass
class Run:
  """A finished subprocess."""

  returncode: int
  stdout: str
  stderr: str

  def describe(self) -> str:
    return (
      f"exit {self.returncode}\n--- stdout ---\n{self.stdout[-3000:]}\n"
      f"--- stderr ---\n{self.stderr[-3000:]}"
    )


def start(
  base: pathlib.Path,
  argv: list[str],
  *,
  module: str = "llmjax.main",
  faults: dict | None = None,
  devices: int = 1,
  env: dict | None = None,
) -> subprocess.Popen:
  """Starts `python -m module argv` (through this file's fault hooks when `faults`);
  `env` adds to or overrides `subprocess_env`."""
  entry = [__file__, module] if faults else ["-m", module]
  return subprocess.Popen(
    [sys.executable, *entry, *argv],
    cwd=REPO,
    text=True,
    env={**subprocess_env(base, devices, faults), **(env or {})},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def finish(proc: subprocess.Popen, timeout: float = 300) -> Run:
  stdout, stderr = proc.communicate(timeout=timeout)
  return Run(proc.returncode, stdout, stderr)


def run(base: pathlib.Path, argv: list[str], **kwargs) -> Run:
  """Runs `python -m llmjax.main argv` (or `module=`) to the end."""
  timeout = kwargs.pop("timeout", 300)
  return finish(start(base, argv, **kwargs), timeout)


def run_many(base: pathlib.Path, jobs: list[dict], parallel: int = 3, **common) -> list[Run]:
  """Runs independent jobs (`start` keyword arguments, `argv` included, over `common`), a
  few at a time: most of a tiny run is single-threaded imports, so they overlap well."""
  results: list[Run | None] = [None] * len(jobs)
  running: list[tuple[int, subprocess.Popen]] = []
  for index, job in enumerate(jobs):
    job = {**common, **job}
    running.append((index, start(base, job.pop("argv"), **job)))
    while len(running) >= parallel or (running and index == len(jobs) - 1):
      done, proc = running.pop(0)
      results[done] = finish(proc)
  return results


def last_logged_step(workdir: pathlib.Path) -> int:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  steps = [0]
  for line in path.read_text().splitlines():
    try:
      steps.append(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError):
      pass
  return max(steps)


def _inode(path: pathlib.Path) -> int | None:
  try:
    return path.stat().st_ino
  except FileNotFoundError:
    return None


def interrupt_at(
  proc: subprocess.Popen, workdir: pathlib.Path, step: int, sig: int, timeout: float = 120
) -> Run:
  """Sends `sig` once the just-started `proc` has logged `step` (it is then at step + 1 or
  so). Lines of an earlier process do not count: a starting run replaces metrics.jsonl."""
  old = _inode(workdir / "metrics.jsonl")
  deadline = time.monotonic() + timeout
  while _inode(workdir / "metrics.jsonl") in (old, None) or last_logged_step(workdir) < step:
    if proc.poll() is not None:
      raise AssertionError(f"run ended before step {step}:\n{finish(proc).describe()}")
    if time.monotonic() > deadline:
      proc.kill()
      raise AssertionError(f"no step {step} within {timeout}s:\n{finish(proc).describe()}")
    time.sleep(0.01)
  proc.send_signal(sig)
  return finish(proc)


def metrics(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl without wall-clock fields: what must be bitwise reproducible."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "elapsed_s")} for row in rows]


def batch_hashes(workdir: pathlib.Path) -> list[tuple[int, str]]:
  rows = []
  for line in (workdir / "batch_hashes.jsonl").read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # A last line torn by kill -9.
      pass
  return [(row["step"], row["hash"]) for row in rows]


def steps_on_disk(workdir: pathlib.Path) -> list[str]:
  """Entries of DIR/checkpoints, sorted: finished steps, `.corrupt` and temporary dirs."""
  root = workdir / "checkpoints"
  return (
    sorted((p.name for p in root.iterdir()), key=lambda n: (len(n), n)) if root.is_dir() else []
  )


def load_state(workdir: pathlib.Path, step: int) -> dict:
  """The whole train state {'params', 'opt_state', 'step'} of checkpoint `step`, as numpy."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(workdir / "checkpoints" / str(step) / "state")
  return jax.tree.map(np.asarray, state)


def assert_trees_equal(a, b) -> None:
  """Bitwise equality of two pytrees of arrays, naming the first differing leaf."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  def flat(tree):  # Layer keys are ints in a model and strings in a checkpoint.
    return {
      jax.tree_util.keystr(
        tuple(jax.tree_util.DictKey(str(getattr(k, "key", k))) for k in path)
      ): np.asarray(x)
      for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }

  flat_a, flat_b = flat(a), flat(b)
  assert sorted(flat_a) == sorted(flat_b)
  for name, x in flat_a.items():
    assert x.dtype == flat_b[name].dtype and np.array_equal(x, flat_b[name]), name


def error_line(result: Run) -> str:
  """The one-line error of a failed CLI run; fails if there is a traceback."""
  assert result.returncode == 1, result.describe()
  assert "Traceback" not in result.stderr, result.describe()
  return result.stderr.strip().splitlines()[-1]


# --- fault hooks (this file run as a script) -------------------------------------------------


def _step_of(directory) -> tuple[str, int]:
  """('checkpoints' or 'best', step) of an Orbax item directory being written."""
  step_dir = pathlib.Path(str(directory)).parent
  return step_dir.parent.name, int(step_dir.name.split(".")[0])


def _install_faults(faults: dict) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from llmjax.train import runner  # pylint: disable=import-outside-toplevel

  if "step_delay" in faults:  # Every job's step goes through the runner's step_fn.
    step_fn = runner._Run.step_fn  # pylint: disable=protected-access

    def slow_step_fn(*args, **kwargs):
      time.sleep(faults["step_delay"])
      return step_fn(*args, **kwargs)

    runner._Run.step_fn = slow_step_fn  # pylint: disable=protected-access

  save = ocp.StandardCheckpointHandler.async_save

  async def faulty_save(self, directory, *args, **kwargs):
    root, step = _step_of(directory)
    if root == "checkpoints" and step == faults.get("kill_in_save"):
      os.kill(os.getpid(), signal.SIGKILL)
    if root == "checkpoints" and step == faults.get("enospc_in_save"):
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await save(self, directory, *args, **kwargs)

  ocp.StandardCheckpointHandler.async_save = faulty_save


def _main() -> None:
  import runpy  # pylint: disable=import-outside-toplevel

  module = sys.argv[1]
  sys.argv = [module] + sys.argv[2:]
  sys.path.insert(0, str(REPO))
  _install_faults(json.loads(os.environ.get(FAULTS_ENV, "{}")))
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  _main()
