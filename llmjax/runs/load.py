"""Loading a finished or running run: its config and its parameters."""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
from flax import nnx

from llmjax import models
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.util import errors

CHECKPOINT_NAMES = {"latest": "latest", "last": "latest", "best": "best"}


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise errors.RunNotFoundError(
      f"{path} does not exist: {workdir} is not a llmjax run directory. Train first with "
      "python -m llmjax.main --config=... --workdir=..."
    )
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text(encoding="utf-8")))
  except (ValueError, TypeError) as e:  # Truncated, not JSON, not an object, not UTF-8.
    raise errors.CheckpointError(
      f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]}). Re-run the "
      f"training command with --workdir={workdir} (it resumes and writes config.json "
      "again), or restore the file from a copy."
    ) from None


def load_model(
  workdir: str | pathlib.Path, which: str = "latest"
) -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
  """Restores only the parameters of a run (no optimizer state) onto the local devices."""
  config = load_run_config(workdir)
  abstract_model = nnx.eval_shape(lambda: models.build(config.model, 0))
  graphdef, abstract_state = nnx.split(abstract_model)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
    nnx.to_pure_dict(abstract_state),
  )
  state_dir, _ = ckpt_lib.checkpoint_dirs(workdir, which)
  ckpt_lib.check_shapes(
    state_dir,
    {"params": target},
    fix=f"{pathlib.Path(workdir) / 'config.json'} no longer describes the model of that "
    "checkpoint: re-run the run's training command to write it again, or restore it.",
  )
  params, step = ckpt_lib.restore_params(workdir, target, which)
  return nnx.merge(graphdef, params), config, step
