"""Orbax checkpoints of the train state, the data-iterator state and run metadata.

Layout under the workdir:
  checkpoints/<step>/{state,data,meta}   the last `keep` steps (Orbax renames a finished
                                         temporary directory into place, so a crash during a
                                         save never touches the previous checkpoint)
  best/<step>/{state,meta}               params of the best validation loss so far

A checkpoint that fails to restore (truncated, corrupted) is skipped with a warning
naming it, and the next older one is used.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
from typing import Any

from absl import logging as absl_logging
import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

# Replica-parallel saving splits every replicated array across its replicas, compiling a
# slice per shape; for arrays under 1 MiB that costs more than the parallel write gains.
_verbosity = absl_logging.get_verbosity()
absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax warns about any override.
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=1 << 20),
    override=True)
absl_logging.set_verbosity(_verbosity)


class CheckpointError(RuntimeError):
  pass


def _manager(directory: pathlib.Path, keep: int, item_names, read_only=False):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         enable_async_checkpointing=False, read_only=read_only)
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
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
          meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()
    except OSError as e:
      raise CheckpointError(
          f"Saving checkpoint {step} to {self.dir} failed ({e}). The previous checkpoint "
          f"(step {self.latest_step()}) is intact. Free disk space and re-run to resume.") from e

  def save_best(self, step: int, params: Any, meta: dict) -> None:
    if self._best is None:
      self._best = _manager(self.best_dir, 1, ("state", "meta"))
    self._best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"params": params}), meta=ocp.args.JsonSave(meta)),
                    force=True)
    self._best.wait_until_finished()

  def restore_latest(self, abstract_state: Any, data_iterator) -> tuple[int, Any, dict] | None:
    """Restores the newest readable checkpoint (data iterator in place), or None if none."""
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
            meta=ocp.args.JsonRestore()))
        return step, restored.state, restored.meta
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back.
        if _is_shape_mismatch(e):
          raise
        log.warning("Checkpoint %s is unreadable (%s: %s); falling back to an older one.",
                    self.dir / str(step), type(e).__name__, str(e)[:300])
        bad = self.dir / f"{step}.corrupt"
        shutil.rmtree(bad, ignore_errors=True)
        (self.dir / str(step)).rename(bad)
        self.manager.reload()
    if steps:
      raise CheckpointError(f"No readable checkpoint left in {self.dir} (tried steps {steps}). "
                            "Delete the directory to start over.")
    return None

  def close(self):
    self.manager.close()
    if self._best is not None:
      self._best.close()


def _is_shape_mismatch(e: Exception) -> bool:
  text = str(e)
  return "shape" in text.lower() and ("mismatch" in text.lower() or "expected" in text.lower())


def checkpoint_dirs(workdir: str | pathlib.Path, which: str = "latest") -> tuple[pathlib.Path, int]:
  """(item directory holding params, step) of the latest or best checkpoint of a workdir."""
  workdir = pathlib.Path(workdir).absolute()
  root = workdir / ("best" if which == "best" else "checkpoints")
  if not root.is_dir():
    raise CheckpointError(f"No {which} checkpoint in {workdir} (looked for {root}). Train "
                          f"first: python -m llmjax.main --config=... --workdir={workdir}")
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
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
    restored = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True))
  return restored["params"], step


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
