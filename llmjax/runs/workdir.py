"""The run directory: one job at a time, stop signals, the resolved config."""

from __future__ import annotations

import contextlib
import fcntl
import json
import pathlib
import signal

import jax
import ml_collections

from llmjax.config import load as config_load

from llmjax.config import validate as config_validate
from llmjax.util import errors
from llmjax.util import fileio


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path):
  """Refuses a second job on the same workdir (each process of a multi-host job locks its
  own file, so the processes of one job share the workdir)."""
  proc = jax.process_index()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / (".lock" if proc == 0 else f".lock.{proc}"), "w")
  except OSError as e:
    raise errors.TrainingError(f"Workdir {workdir} is not writable ({e}). Pick another "
                               "--workdir.") from None
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise errors.TrainingError(f"Workdir {workdir} is in use by another running job; wait "
                               "for it or pick another --workdir.") from None
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the runner checks after each step."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: signals stay as they were.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, resuming: bool):
  """DIR/config.json; on resume, first refuses a config that changed the model's shape."""
  path = workdir / "config.json"
  if resuming and path.exists():
    config_validate.check_resume_compatible(json.loads(path.read_text()), config)
  fileio.atomic_write_text(path, config_load.to_json(config))
