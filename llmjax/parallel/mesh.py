"""Device mesh, logical-axis sharding rules, and multi-host initialisation.

The mesh has three named axes: `data` (batch), `fsdp` (batch and parameter sharding) and
`tensor` (attention heads, MLP hidden, vocabulary). Parameters carry logical axis names
(`logical_axes` metadata); `LOGICAL_RULES` maps each name to mesh axes.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import sys
import threading

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils, multihost_utils
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


# Seconds the processes of a multi-process run have to join (LLMJAX_INIT_TIMEOUT).
INIT_TIMEOUT_S = 120


def maybe_initialize_distributed(
  coordinator: str = "", num_processes: int = 0, process_id: int = -1, timeout_s: int = 0
) -> bool:
  """Calls `jax.distributed.initialize` when several processes are configured.

  Sources, in order: explicit arguments (the `--coordinator/--num_processes/--process_id`
  flags of `llmjax.main`), the LLMJAX_COORDINATOR / LLMJAX_NUM_PROCESSES /
  LLMJAX_PROCESS_ID environment variables (set by `launch/multihost.sh`), then SLURM: a
  job step started by `srun` with more than one task (see `slurm_distributed_args`).
  Every process keeps all of its local devices, except with several SLURM tasks on one
  node (one device each, by SLURM_LOCALID) or with JAX_LOCAL_DEVICE_IDS set.

  When the processes have not all joined within `timeout_s` (else $LLMJAX_INIT_TIMEOUT,
  else 120 s) the process prints one line naming the coordinator and exits with status 1
  (JAX itself would abort with a stack trace). Calling it again after a successful
  initialisation is a no-op. Returns True when running multi-process.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator = coordinator or os.environ.get("LLMJAX_COORDINATOR", "")
  num_processes = num_processes or int(os.environ.get("LLMJAX_NUM_PROCESSES", "0") or 0)
  if process_id < 0:
    process_id = int(os.environ.get("LLMJAX_PROCESS_ID", "-1") or -1)
  timeout_s = int(timeout_s or os.environ.get("LLMJAX_INIT_TIMEOUT") or INIT_TIMEOUT_S)
  local_device_ids = None
  if num_processes > 1:
    if not coordinator or not 0 <= process_id < num_processes:
      raise errors.ConfigError(
        f"Multi-process run with num_processes={num_processes} needs a coordinator "
        f"address (got {coordinator!r}) and a process id in 0..{num_processes - 1} (got "
        f"{process_id}); set LLMJAX_COORDINATOR=host:port and LLMJAX_PROCESS_ID, or start "
        "the job with launch/multihost.sh."
      )
    how = "--coordinator or $LLMJAX_COORDINATOR"
  elif int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
    if "SLURM_STEP_NODELIST" not in os.environ:
      raise errors.ConfigError(
        f"SLURM_NTASKS={os.environ['SLURM_NTASKS']} but this is not a job step: start "
        "each task with srun (see launch/slurm.sbatch) so that JAX can find its peers."
      )
    coordinator, num_processes, process_id, local_device_ids = slurm_distributed_args(os.environ)
    how = "the first node of the SLURM step"
  else:
    return False
  if local_device_ids is None and os.environ.get("JAX_LOCAL_DEVICE_IDS"):
    local_device_ids = [int(i) for i in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
  _check_coordinator_host(coordinator, process_id)
  watchdog = threading.Timer(
    timeout_s, _join_timed_out, (coordinator, num_processes, process_id, timeout_s, how)
  )
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator,
      num_processes=num_processes,
      process_id=process_id,
      local_device_ids=local_device_ids,
      # Not JAX's own detection: for SLURM it would restrict every task to one device.
      cluster_detection_method="deactivate",
      # JAX aborts with a stack trace when this passes; the watchdog speaks first.
      initialization_timeout=timeout_s + 60,
    )
  finally:
    watchdog.cancel()
  return True


def slurm_distributed_args(env) -> tuple[str, int, int, list[int] | None]:
  """(coordinator, num_processes, process_id, local_device_ids) of a SLURM job step.

  The coordinator is the step's first node, on port $JAX_COORDINATOR_PORT or, as JAX
  picks it, 61440 + job id mod 4096. A node running one task keeps all of its devices
  (None); with several tasks on a node, each task gets device SLURM_LOCALID (one task per
  GPU), unless JAX_LOCAL_DEVICE_IDS says otherwise.
  """
  port = env.get("JAX_COORDINATOR_PORT") or str(int(env["SLURM_JOB_ID"]) % 4096 + 61440)
  coordinator = f"{first_slurm_host(env['SLURM_STEP_NODELIST'])}:{port}"
  node = int(env.get("SLURM_NODEID", "0") or 0)
  per_node = slurm_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""))
  tasks_here = per_node[node] if node < len(per_node) else 1
  local_ids = [int(env.get("SLURM_LOCALID", "0"))] if tasks_here > 1 else None
  return coordinator, int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"]), local_ids


def first_slurm_host(nodelist: str) -> str:
  """The first host of a SLURM node list: 'n1,n2' -> n1, 'gpu[003-005,9],x' -> gpu003."""
  head = re.match(r"([^,\[]*)(?:\[([^\],-]*))?", nodelist.strip())
  return head.group(1) + (head.group(2) or "")


def slurm_tasks_per_node(text: str) -> list[int]:
  """SLURM_STEP_TASKS_PER_NODE as a list per node: '2(x3),1' -> [2, 2, 2, 1]."""
  counts = []
  for part in filter(None, text.split(",")):
    count, _, times = part.partition("(x")
    counts += [int(count)] * int(times.rstrip(")") or 1)
  return counts


def _check_coordinator_host(coordinator: str, process_id: int) -> None:
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit():
    raise errors.ConfigError(
      f"Coordinator address {coordinator!r} is not host:port (e.g. node1:12355)."
    )
  try:
    socket.getaddrinfo(host.strip("[]"), int(port))
  except OSError as e:
    raise errors.ConfigError(
      f"Process {process_id}: coordinator host {host!r} of {coordinator} does not resolve "
      f"({e.strerror or e}); give process 0's host name or address."
    ) from None


def _join_timed_out(coordinator, num_processes, process_id, timeout_s, how) -> None:
  """Watchdog of `maybe_initialize_distributed`: one line on stderr, then exit status 1."""
  sys.stderr.write(
    f"Error: process {process_id} of {num_processes} could not join the job at coordinator "
    f"{coordinator} within {timeout_s} s: the address is not process 0's host:port, it "
    f"is unreachable from here, or not all {num_processes} processes were started. Fix "
    f"the address ({how}), or raise LLMJAX_INIT_TIMEOUT if processes start late.\n"
  )
  sys.stderr.flush()
  os._exit(1)


def max_over_processes(value: int) -> int:
  """The largest of every process's `value` (all processes must call it at the same
  point); `value` itself in a single-process run."""
  if jax.process_count() == 1:
    return int(value)
  gathered = multihost_utils.process_allgather(np.asarray(int(value), np.int32))
  return int(np.max(gathered))


def barrier(name: str) -> None:
  """Waits until every process got here (no-op in a single-process run)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def agreed_stop_signal(received: str | None, step: int, every: int = 1) -> str | None:
  """The stop signal ('SIGTERM', 'SIGINT' or None) a run acts on after `step`.

  One process: its own. Several: a signal any process received, agreed by all every
  `every` steps (`train.stop_check_every`) and None in between, so that every process
  saves the same step and leaves the loop there; a signal seen by some processes only (or
  at different steps) would otherwise split them between a save and the next step's
  collectives. Every process must call it after every step.
  """
  if jax.process_count() == 1:
    return received
  if step % max(1, int(every)):
    return None
  code = max_over_processes(signal.Signals[received].value if received else 0)
  return signal.Signals(code).name if code else None
