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
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from llmjax.util import errors

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
    raise errors.ConfigError(f"At most one of mesh.data/fsdp/tensor may be -1, got {sizes}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n_devices % known:
      raise errors.ConfigError(
        f"{n_devices} devices do not divide into mesh {sizes}: the sizes that "
        f"are set multiply to {known}."
      )
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices:
    raise errors.ConfigError(
      f"Mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = "
      f"{math.prod(sizes)} devices, but {n_devices} are available. Set one "
      "of --config.mesh.data/fsdp/tensor to -1 to use the rest."
    )
  return tuple(sizes)


def mesh_devices(mesh_cfg, devices=None) -> list:
  """The devices a mesh spans: `devices`, else the first `mesh.num_devices` (0 = all)."""
  if devices is not None:
    return list(devices)
  devices = jax.devices()
  n = int(mesh_cfg.get("num_devices", 0) or 0)
  if n == 0:
    return list(devices)
  if jax.process_count() > 1 and n != len(devices):
    raise errors.ConfigError(
      f"mesh.num_devices={n} selects a subset of the {len(devices)} devices, "
      f"which is not possible with {jax.process_count()} processes; leave it at "
      "0 (all devices)."
    )
  if not 0 < n <= len(devices):
    raise errors.ConfigError(
      f"mesh.num_devices={n}, but {len(devices)} devices are available; use "
      f"a value in 1..{len(devices)}, or 0 for all."
    )
  return list(devices[:n])


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """Mesh ('data', 'fsdp', 'tensor') over `devices` (default: see `mesh_devices`)."""
  devices = mesh_devices(mesh_cfg, devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  try:
    device_array = mesh_utils.create_device_mesh(shape, devices)
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
    spec = logical_to_spec(
      variable.get_metadata().get("logical_axes"), value.ndim, value.shape, mesh
    )
    return NamedSharding(mesh, spec)

  shardings = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings) if hasattr(nnx, "to_pure_dict") else shardings


def traced_under(mesh: Mesh, fn):
  """`fn` traced with `mesh` as the context mesh, so that models' activation constraints
  (`layers.constrain`) apply; wrap before `jax.jit`."""

  def wrapped(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)

  return wrapped


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed(
  coordinator: str = "", num_processes: int = 0, process_id: int = -1
) -> bool:
  """Calls `jax.distributed.initialize` when several processes are configured.

  Sources, in order: explicit arguments (the `--coordinator/--num_processes/--process_id`
  flags of `llmjax.main`), the LLMJAX_COORDINATOR / LLMJAX_NUM_PROCESSES /
  LLMJAX_PROCESS_ID environment variables (set by `launch/multihost.sh`), then SLURM: a
  job step started by `srun` with more than one task (JAX reads the SLURM variables).
  Calling it again after a successful initialisation is a no-op. Returns True when
  running multi-process.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator = coordinator or os.environ.get("LLMJAX_COORDINATOR", "")
  num_processes = num_processes or int(os.environ.get("LLMJAX_NUM_PROCESSES", "0") or 0)
  if process_id < 0:
    process_id = int(os.environ.get("LLMJAX_PROCESS_ID", "-1") or -1)
  if num_processes > 1:
    if not coordinator or not 0 <= process_id < num_processes:
      raise errors.ConfigError(
        f"Multi-process run with num_processes={num_processes} needs a coordinator "
        f"address (got {coordinator!r}) and a process id in 0..{num_processes - 1} (got "
        f"{process_id}); set LLMJAX_COORDINATOR=host:port and LLMJAX_PROCESS_ID, or start "
        "the job with launch/multihost.sh."
      )
    jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return True
  if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
    if "SLURM_STEP_NODELIST" not in os.environ:
      raise errors.ConfigError(
        f"SLURM_NTASKS={os.environ['SLURM_NTASKS']} but this is not a job step: start "
        "each task with srun (see launch/slurm.sbatch) so that JAX can find its peers."
      )
    jax.distributed.initialize()
    return True
  return False
