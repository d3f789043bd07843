"""Does one training step fit in memory? Checked on the compiled step before it first runs,
so a run that cannot fit stops with one line instead of dying mid-step."""

from __future__ import annotations

import os

import jax

from llmjax.util import errors

GiB = 1 << 30
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


def device_memory_bytes(device=None) -> tuple[int, str]:
  """(bytes one device can use, where that figure comes from)."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.device_kind} memory"
  return host_memory_bytes() // max(jax.local_device_count(), 1), "host RAM"


def host_memory_bytes() -> int:
  """Memory available to this process now (MemAvailable), else the physical total."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_bytes(compiled) -> int | None:
  """Peak bytes per device the compiled step needs: its inputs, outputs not aliased to
  (donated) inputs, and temporaries; None when the backend does not say."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - some backends do not implement it.
    return None
  if stats is None:
    return None
  return int(
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    - stats.alias_size_in_bytes
    + stats.temp_size_in_bytes
  )


def fit_advice(config) -> str:
  tc, mc = config.train, config.get("model")
  hints = [
    f"raise train.grad_accum (now {tc.grad_accum}) or lower train.batch_size (now {tc.batch_size})"
  ]
  if mc is not None:
    if "remat" in mc and mc.remat == "none":  # Not every model.arch declares remat.
      hints.append("set model.remat=full")
    if "dtype" in mc and mc.dtype == "float32":
      hints.append("set model.dtype=bfloat16")
  hints.append("or run a smaller variant (e.g. :cpu)")
  return ", ".join(hints)


def check_step_fits(compiled, config, limit_gib: float = 0.0) -> int | None:
  """Raises TrainingError when the compiled step needs more than one device has.

  `limit_gib` > 0 replaces the device's memory (train.memory_limit_gib). Returns the
  estimate in bytes (None when unknown)."""
  need = step_bytes(compiled)
  if need is None:
    return None
  have, where = device_memory_bytes()
  if limit_gib > 0:
    have, where = int(limit_gib * GiB), "train.memory_limit_gib"
  if need > have:
    raise errors.TrainingError(
      f"One training step needs about {need / GiB:.2f} GiB per device but {where} allows "
      f"{have / GiB:.2f} GiB; nothing was trained. To fit: {fit_advice(config)}."
    )
  return need


def is_out_of_memory(e: BaseException) -> bool:
  return any(marker in str(e) for marker in OOM_MARKERS)


def out_of_memory_error(e: BaseException, step: int, last_checkpoint, config):
  return errors.TrainingError(
    f"Out of memory at step {step} ({' '.join(str(e).split())[:160]}). The last "
    f"checkpoint (step {last_checkpoint}) is kept. To fit: {fit_advice(config)}; then "
    "re-run the same command to resume."
  )
