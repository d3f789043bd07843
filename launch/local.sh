#!/usr/bin/env bash
# Trains on all devices of this machine in one process (the mesh flags pick the layout).
#
#   launch/local.sh --config=configs/shakespeare.py:cpu --workdir=runs/shakespeare
#   launch/local.sh --config=configs/shakespeare.py --workdir=runs/gpt2 --config.mesh.fsdp=8
#   CPU_DEVICES=8 launch/local.sh --config=... --workdir=... --config.mesh.tensor=2
#
# PYTHON picks the interpreter (default: the repository's .venv, else python3);
# CPU_DEVICES=K runs on K fake CPU devices, to try a mesh layout without accelerators.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ -x "$root/.venv/bin/python" ]] && PYTHON="$root/.venv/bin/python"
fi
if [[ -n "${CPU_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$CPU_DEVICES"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m llmjax.main "$@"
