"""What every benchmark reports about the machine, and how it hands its JSON back.

Figures from different machines are not comparable (two x86 server CPUs gave ratios 30%
apart), so every benchmark names the CPU model next to its numbers.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform


def cpu_fields() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
  if not os.path.exists("/proc/cpuinfo"):
    return {}
  fields: dict[str, str] = {}
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  return fields


def cpu_model() -> str:
  return cpu_fields().get("model name") or platform.processor() or platform.machine()


def cpu_peak(fma_units: int = 0) -> dict:
  """Single-precision FLOP/s peak: cores x FMA units x SIMD lanes x 2 x clock.

  Read from /proc/cpuinfo and the affinity mask: lanes = 16 with avx512f, 8 with avx2/fma,
  4 otherwise; clock = the reported 'cpu MHz' (the base clock on most VMs; turbo would
  raise the real peak); FMA units per core are not visible in cpuinfo: assumed 2 (Intel
  Xeon Skylake-SP and later, AMD Zen 2 and later) unless given.
  """
  fields = cpu_fields()
  flags_ = set(fields.get("flags", "").split())
  lanes = 16 if "avx512f" in flags_ else 8 if ("avx2" in flags_ or "fma" in flags_) else 4
  cores = len(os.sched_getaffinity(0))
  mhz = float(fields.get("cpu MHz", "0") or 0)
  units = fma_units or 2
  peak = cores * units * lanes * 2 * mhz * 1e6
  return {
    "cpu": cpu_model(),
    "cores": cores,
    "simd_fp32_lanes": lanes,
    "fma_units_per_core": units,
    "clock_mhz": mhz,
    "peak_gflops": round(peak / 1e9, 1),
    "peak_formula": f"{cores} cores x {units} FMA x {lanes} lanes x 2 x {mhz:.0f} MHz",
    "fma_units_assumed": not fma_units,
  }


def emit(result: dict, out: str = "") -> None:
  """Prints `result` as JSON and, when `out` is set, writes the same text there."""
  text = json.dumps(result, indent=1)
  print(text)
  if out:
    pathlib.Path(out).write_text(text + "\n")
