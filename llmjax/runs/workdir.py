"""The run directory: one job at a time, stop signals, the resolved config, the identity.

A run's identity (`DIR/identity.json`) is what a resume must not change: the token stream
(the token-cache key and the source and tokenizer fingerprints of the data's manifest), the
tokenizer, the validation fraction, the batch size, the seed and the model's shape. A resume
whose identity differs is refused naming the key, before anything is written; `config.json`
and `identity.json` are written only after a successful restore or init.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import pathlib
import signal
from typing import Any

import jax
import ml_collections

from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.util import errors, fileio

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
# Config keys of the identity, in the order a difference is reported.
IDENTITY_CONFIG_KEYS = (
  "data.tokenizer",
  "data.val_fraction",
  "train.batch_size",
  "train.seed",
  *config_validate.MODEL_SHAPE_KEYS,
)
# Keys taken from the data's token manifest, reported after the config keys (a changed
# tokenizer or val_fraction also changes them).
IDENTITY_DATA_KEYS = {
  "data.source_fingerprint": "source_fingerprint",
  "data.tokenizer_fingerprint": "tokenizer_fingerprint",
  "data.token_cache_key": "key",
}


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path):
  """Refuses a second job on the same workdir (each process of a multi-host job locks its
  own file, so the processes of one job share the workdir)."""
  proc = jax.process_index()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / (".lock" if proc == 0 else f".lock.{proc}"), "w")
  except OSError as e:
    raise errors.TrainingError(
      f"Workdir {workdir} is not writable ({e}). Pick another --workdir."
    ) from None
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise errors.TrainingError(
      f"Workdir {workdir} is in use by another running job; wait for it or pick another --workdir."
    ) from None
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


def _plain(value):
  """`value` as JSON gives it back (tuples become lists), for comparing with a saved one."""
  return json.loads(json.dumps(value))


def data_manifest(task) -> dict | None:
  """The token manifest of a job's data (`task.splits`), with the cache key it lives under;
  None before the data is loaded or for jobs without a token stream."""
  splits = getattr(task, "splits", None)
  manifest = getattr(splits, "manifest", None)
  if not isinstance(manifest, dict):
    return None
  directory = pathlib.Path(getattr(splits, "dir", "") or "")
  if "key" not in manifest and directory.parent.name in ("tokens", "notes_corpora"):
    manifest = {**manifest, "key": directory.name}  # A cache directory is named by its key.
  return manifest


def run_identity(config: ml_collections.ConfigDict, manifest: dict | None = None) -> dict:
  """What a resume of `config` must not change (see the module docstring); the data keys
  only when `manifest` (the token manifest of the loaded data) is given."""
  flat = config_load.flatten(config)
  identity = {key: _plain(flat[key]) for key in IDENTITY_CONFIG_KEYS if key in flat}
  for key, field in IDENTITY_DATA_KEYS.items():
    if manifest and manifest.get(field) is not None:
      identity[key] = _plain(manifest[field])
  return identity


def _read_json(path: pathlib.Path) -> Any:
  """The JSON in `path`, or None when it is missing or damaged (with a warning: it is
  written again once the run has restored its checkpoint)."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, OSError) as e:
    log.warning(
      "%s is unreadable (%s: %s); resuming without it (it is written again after the restore).",
      path,
      type(e).__name__,
      e,
    )
    return None


def check_resume(workdir: pathlib.Path, task) -> None:
  """Refuses to resume `task` in `workdir` when its identity differs from the saved run's,
  naming the first differing key, its old and new value and the fix. Call it before the
  data is loaded (config keys) and again after (the data's fingerprints too); it writes
  nothing. A workdir without a readable `identity.json` (from an older version) is checked
  against its `config.json` (model-shape keys only)."""
  saved = _read_json(workdir / IDENTITY_FILE)
  if not isinstance(saved, dict):
    saved_config = _read_json(workdir / "config.json")
    if isinstance(saved_config, dict):
      config_validate.check_resume_compatible(saved_config, task.run_config())
    return
  now = run_identity(task.config, data_manifest(task))
  for key, value in now.items():
    if key not in saved or saved[key] == value:
      continue
    if key in IDENTITY_DATA_KEYS:
      raise errors.ConfigError(
        f"The workdir holds a run with {key}={saved[key]!r} but the data now gives "
        f"{value!r}: the text (data.path, data.source) or the tokenizer changed since that "
        "run. Use a new --workdir, or give it the data of that run to resume."
      )
    raise errors.ConfigError(
      f"The workdir holds a run with {key}={saved[key]!r} but the config now says "
      f"{value!r}. Use a new --workdir, or set {key}={saved[key]!r} to resume."
    )


def write_config(
  workdir: pathlib.Path, config: ml_collections.ConfigDict, resuming: bool = False, task=None
):
  """DIR/config.json (and DIR/identity.json of `task`), atomically; call it only after a
  successful restore or init. With `resuming`, first refuses a config that changed the
  model's shape."""
  path = workdir / "config.json"
  if resuming:
    saved = _read_json(path)
    if isinstance(saved, dict):
      config_validate.check_resume_compatible(saved, config)
  if task is not None:
    fileio.atomic_write_json(
      workdir / IDENTITY_FILE, run_identity(task.config, data_manifest(task))
    )
  fileio.atomic_write_text(path, config_load.to_json(config))
