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
        "python -m llmjax.main --config=... --workdir=...")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_model(workdir: str | pathlib.Path, which: str = "latest") -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
  """Restores only the parameters of a run (no optimizer state) onto the local devices."""
  config = load_run_config(workdir)
  abstract_model = nnx.eval_shape(lambda: models.build(config.model, 0))
  graphdef, abstract_state = nnx.split(abstract_model)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        nnx.to_pure_dict(abstract_state))
  params, step = ckpt_lib.restore_params(workdir, target, which)
  return nnx.merge(graphdef, params), config, step
