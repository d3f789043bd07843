"""Orbax checkpoints of the train state, the data-iterator state and run metadata.

Layout under the workdir:
  checkpoints/<step>/{state,data,meta}   the last `keep` steps (Orbax renames a finished
                                         temporary directory into place, so a crash during a
                                         save never touches the previous checkpoint)
  best/<step>/{state,meta}               params of the best validation loss so far

A checkpoint that fails to restore (truncated, corrupted) is skipped with a warning
naming it, and the next older one is used; the skipped one is then renamed
`<step>.corrupt`. When none restores, nothing is renamed and the error lists each failure.
A checkpoint whose parameter shapes differ from the model's is not corrupt: that is an
error naming the first differing parameter. A failed save (disk full) raises
`CheckpointError`; the previous checkpoints are untouched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
import types
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from llmjax.parallel import mesh as mesh_lib
from llmjax.util import errors

log = logging.getLogger(__name__)

# Replica-parallel saving splits every replicated array across its replicas, compiling a
# slice per shape; for arrays under 1 MiB that costs more than the parallel write gains.
_verbosity = absl_logging.get_verbosity()
absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax warns about any override.
ocp.type_handlers.register_type_handler(
  jax.Array,
  ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=1 << 20),
  override=True,
)
absl_logging.set_verbosity(_verbosity)

CheckpointError = errors.CheckpointError


def _manager(directory: pathlib.Path, keep: int, item_names, read_only=False):
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=not read_only, enable_async_checkpointing=False, read_only=read_only
  )
  return ocp.CheckpointManager(directory, item_names=item_names, options=options)


class Checkpointer:
  """Saves and restores training checkpoints of one workdir."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 3):
    self.dir = pathlib.Path(workdir).absolute() / "checkpoints"
    self.best_dir = pathlib.Path(workdir).absolute() / "best"
    self.manager = _manager(self.dir, keep, ("state", "data", "meta"))
    self._best = None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator, meta: dict) -> None:
    try:
      self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
          meta=ocp.args.JsonSave(meta),
        ),
        force=True,
      )
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many types for I/O.
      raise self._save_error(self.dir, step, e) from e

  def save_best(self, step: int, params: Any, meta: dict) -> None:
    try:
      if self._best is None:
        self._best = _manager(self.best_dir, 1, ("state", "meta"))
      self._best.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave({"params": params}), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
      )
      self._best.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_error(self.best_dir, step, e) from e

  @staticmethod
  def _save_error(root: pathlib.Path, step: int, e: Exception) -> CheckpointError:
    previous = [s for s in finished_steps(root) if s < step]
    text = " ".join(str(e).split()) or type(e).__name__
    full = "No space left" in text or getattr(e, "errno", None) == errno.ENOSPC
    return CheckpointError(
      f"Saving checkpoint {root / str(step)} failed ({type(e).__name__}: {text[:300]}). "
      + (f"The previous checkpoint (step {previous[-1]}) is intact. " if previous else "")
      + ("Free disk space" if full else "Fix the cause")
      + " and re-run the same command "
      "to resume."
    )

  def restore_latest(self, abstract_state: Any, data_iterator) -> tuple[int, Any, dict] | None:
    """Restores the newest readable checkpoint (data iterator in place), or None if none.

    `abstract_state` is the state's tree of ShapeDtypeStructs, or a function of the step
    giving it (when the state's structure depends on the step, as in progressive runs).
    """
    steps = self.all_steps()
    failed = []
    for step in reversed(steps):
      target = abstract_state(step) if callable(abstract_state) else abstract_state
      with _stderr_kept_unless_failed() as attempt:
        try:
          check_shapes(self.dir / str(step) / "state", target)
          restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target),
              data=grain.checkpoint.CheckpointRestore(data_iterator),
              meta=ocp.args.JsonRestore(),
            ),
          )
        except CheckpointError:
          raise
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back.
          attempt.failed = True
          failed.append((step, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
      if _unreadable_on_any_process(attempt.failed) and not attempt.failed:
        attempt.failed = True
        failed.append((step, "unreadable in another process of this job"))
      if attempt.failed:
        log.warning(
          "Checkpoint %s is unreadable (%s); trying an older one.",
          self.dir / str(step),
          failed[-1][1],
        )
        continue
      self._set_aside_after_restore(step, [bad for bad, _ in failed])
      return step, restored.state, restored.meta
    if steps:
      raise CheckpointError(
        f"No readable checkpoint in {self.dir}: "
        + "; ".join(f"step {step}: {why}" for step, why in failed)
        + ". Nothing was renamed or "
        "deleted. If the code or config changed, restore them; to start over instead, move "
        f"{self.dir} aside."
      )
    return None

  def _set_aside_after_restore(self, step: int, bad_steps: list[int]) -> None:
    """After resuming from `step`: the unreadable newer checkpoints become `<step>.corrupt`
    and newer best checkpoints are dropped, by process 0 alone (the workdir is shared);
    the other processes wait for it, then all see the same checkpoints."""
    if jax.process_index() == 0:
      for bad in bad_steps:  # Out of the way: the resumed run saves these steps anew.
        shutil.rmtree(self.dir / f"{bad}.corrupt", ignore_errors=True)
        (self.dir / str(bad)).rename(self.dir / f"{bad}.corrupt")
        log.warning(
          "Resuming from checkpoint %s; the unreadable %s is kept as %s.",
          self.dir / str(step),
          self.dir / str(bad),
          self.dir / f"{bad}.corrupt",
        )
      self._drop_best_after(step)
    mesh_lib.barrier("llmjax_checkpoint_set_aside")
    if bad_steps:
      self.manager.reload()

  def _drop_best_after(self, step: int) -> None:
    """A best checkpoint newer than the resumed step belongs to the discarded future."""
    for later in finished_steps(self.best_dir):
      if later > step:
        shutil.rmtree(self.best_dir / str(later))

  def close(self):
    self.manager.close()
    if self._best is not None:
      self._best.close()


def _unreadable_on_any_process(failed_here: bool) -> bool:
  """Every process restores its part of a checkpoint; if one cannot, none uses it (each
  process calls this once per checkpoint tried)."""
  return bool(mesh_lib.max_over_processes(int(failed_here)))


@contextlib.contextmanager
def _stderr_kept_unless_failed():
  """Holds back what is written to file descriptor 2 and drops it if `.failed` is set.

  When Orbax's restore of a damaged checkpoint fails, TensorStore reads still in flight
  finish into Orbax's closed event loop and print a traceback each; they say nothing the
  warning about the checkpoint does not.
  """
  attempt = types.SimpleNamespace(failed=False)
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield attempt
    finally:
      if attempt.failed:  # Let the stragglers finish while stderr is still held.
        _wait_until_quiet(held.fileno())
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if not attempt.failed:
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))
        sys.stderr.flush()


def _wait_until_quiet(fd: int, quiet_s: float = 0.5, limit_s: float = 5.0) -> None:
  """Waits until nothing has been written to `fd` for `quiet_s` (at most `limit_s`): on a
  busy machine the stragglers' tracebacks come later than on an idle one, and a fixed
  pause let some through."""
  deadline = time.monotonic() + limit_s
  size, still_since = os.fstat(fd).st_size, time.monotonic()
  while time.monotonic() < deadline and time.monotonic() - still_since < quiet_s:
    time.sleep(0.05)
    now = os.fstat(fd).st_size
    if now != size:
      size, still_since = now, time.monotonic()


def finished_steps(root: pathlib.Path) -> list[int]:
  """Steps of the finished checkpoints under `root` (Orbax renames a finished save into
  a plain `<step>` directory)."""
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


RESUME_FIX = "Use a new --workdir, or restore the model config of that run."


def check_shapes(state_dir: pathlib.Path, abstract_state: Any, fix: str = RESUME_FIX) -> None:
  """Raises CheckpointError naming the first array of `abstract_state` (parameters first,
  then in tree order) whose shape differs from the checkpoint's, or that it lacks; `fix`
  ends the message."""
  saved = ocp.StandardCheckpointHandler().metadata(state_dir)
  saved_shapes = {
    _path_key(path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]
    if hasattr(leaf, "shape")
  }
  flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  flat.sort(key=lambda item: _path_key(item[0])[:1] != ("params",))  # Parameters first.
  for path, want in flat:
    got = saved_shapes.get(_path_key(path), "missing")
    if got != tuple(want.shape):
      name = jax.tree_util.keystr(path)
      what = f"has no array {name}" if got == "missing" else f"has {name} of shape {got}"
      raise CheckpointError(
        f"Checkpoint {state_dir.parent} {what} but the model expects shape "
        f"{tuple(want.shape)}: the model changed since it was written. {fix}"
      )


def _path_key(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def checkpoint_dirs(workdir: str | pathlib.Path, which: str = "latest") -> tuple[pathlib.Path, int]:
  """(item directory holding params, step) of the latest or best checkpoint of a workdir."""
  workdir = pathlib.Path(workdir).absolute()
  root = workdir / ("best" if which == "best" else "checkpoints")
  if not root.is_dir():
    raise CheckpointError(
      f"No {which} checkpoint in {workdir} (looked for {root}). Train "
      f"first: python -m llmjax.main --config=... --workdir={workdir}"
    )
  steps = finished_steps(root)
  if not steps:
    raise CheckpointError(f"{root} holds no finished checkpoint.")
  return root / str(steps[-1]) / "state", steps[-1]


def restore_params(workdir: str | pathlib.Path, abstract_params: Any, which: str = "latest"):
  """Restores only the parameters (no optimizer state) onto `abstract_params`' shardings.

  `abstract_params` leaves are `jax.ShapeDtypeStruct`s with a `sharding`.
  """
  state_dir, step = checkpoint_dirs(workdir, which)
  target = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(
      state_dir,
      args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True),
    )
  return restored["params"], step


def abstract_like(tree, shardings):
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )
