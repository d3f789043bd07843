"""Device mesh, logical-axis sharding rules, and multi-host initialisation.

The mesh has three named axes: `data` (batch), `fsdp` (batch and parameter sharding) and
`tensor` (attention heads, MLP hidden, vocabulary). Parameters carry logical axis names
(`logical_axes` metadata); `LOGICAL_RULES` maps each name to mesh axes.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis name -> mesh axis (or None = replicated)
LOGICAL_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "norm": None,
    "layers": None,
}


def mesh_shape(mesh_cfg, n_devices: int) -> tuple[int, int, int]:
  """Resolves `mesh.data/fsdp/tensor` (one may be -1 = the devices left over)."""
  sizes = [int(mesh_cfg.data), int(mesh_cfg.fsdp), int(mesh_cfg.tensor)]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one of mesh.data/fsdp/tensor may be -1, got {sizes}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n_devices % known:
      raise ValueError(f"{n_devices} devices do not divide into mesh {sizes}: the sizes that "
                       f"are set multiply to {known}.")
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices:
    raise ValueError(f"Mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = "
                     f"{math.prod(sizes)} devices, but {n_devices} are available. Set one "
                     "of --config.mesh.data/fsdp/tensor to -1 to use the rest.")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_cfg, len(devices))
  try:
    device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # Fake CPU devices or unusual topologies: plain order is fine.
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def logical_to_spec(logical_axes, ndim: int, shape=None, mesh: Mesh | None = None) -> P:
  """PartitionSpec for a parameter; a leading stacked-layer axis is added when needed.

  Axes that do not divide the mesh axis size are replicated instead of failing.
  """
  axes = tuple(logical_axes or ())
  if len(axes) == ndim - 1:
    axes = ("layers",) + axes
  if len(axes) != ndim:
    return P()
  spec = []
  used = set()
  for i, name in enumerate(axes):
    mesh_axis = LOGICAL_RULES.get(name) if name else None
    names = (mesh_axis,) if isinstance(mesh_axis, str) else tuple(mesh_axis or ())
    if mesh is not None and shape is not None:
      size = math.prod(mesh.shape[a] for a in names)
      if size > 1 and shape[i] % size:
        names = ()
    names = tuple(a for a in names if a not in used)
    used.update(names)
    spec.append(names[0] if len(names) == 1 else (names or None))
  return P(*spec)


def param_shardings(abstract_state: nnx.State, mesh: Mesh):
  """A pure-dict tree of NamedShardings matching `abstract_state.to_pure_dict()`."""
  def one(variable):
    value = variable.get_value()
    spec = logical_to_spec(variable.get_metadata().get("logical_axes"), value.ndim,
                           value.shape, mesh)
    return NamedSharding(mesh, spec)
  shardings = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings) if hasattr(nnx, "to_pure_dict") else shardings


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> bool:
  """Calls `jax.distributed.initialize` when several processes are configured.

  Sources, in order: explicit arguments, LLMJAX_COORDINATOR/LLMJAX_NUM_PROCESSES/
  LLMJAX_PROCESS_ID, then SLURM (detected by JAX itself). Returns True if initialised.
  """
  coordinator = coordinator or os.environ.get("LLMJAX_COORDINATOR", "")
  num_processes = num_processes or int(os.environ.get("LLMJAX_NUM_PROCESSES", "0"))
  if process_id < 0:
    process_id = int(os.environ.get("LLMJAX_PROCESS_ID", "-1"))
  if coordinator and num_processes > 1:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
    return True
  return False
