#!/usr/bin/env bash
# The GPU suite on a machine that reaches no package registry, in one command:
#
#   bash benchmarks/gpu_run.sh                        # the full suite; JSON to $OUT/gpu_suite.json
#   bash benchmarks/gpu_run.sh --smoke --parts=decode # any other --flag goes to gpu_suite
#
# Installs the wheels of benchmarks/gpu_wheels.sh (--wheels=DIR, default .gpu_wheels) into a
# folder (--target=DIR, default a temporary one) without a registry and without their
# dependencies (they are the image's), puts the project and that folder on PYTHONPATH, prints
# the device and what it installed, runs `python -m benchmarks.gpu_suite` and writes its JSON
# and its log to --out=DIR (default $OUT, else the current folder). The suite starts no part
# after GPU_SUITE_DEADLINE_S (default 300) seconds and is stopped after GPU_SUITE_TIMEOUT_S
# (default 440): the JSON then holds the parts finished ("partial": true), and the whole
# command stays under 8 minutes.
#
# Environment: PYTHON (default python).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
WHEELS=$ROOT/.gpu_wheels
TARGET=""
OUT_DIR=${OUT:-.}
SUITE=()
for arg in "$@"; do
  case $arg in
    --wheels=*) WHEELS=${arg#*=} ;;
    --target=*) TARGET=${arg#*=} ;;
    --out=*) OUT_DIR=${arg#*=} ;;
    *) SUITE+=("$arg") ;;
  esac
done

shopt -s nullglob
WHLS=("$WHEELS"/*.whl)
if ((${#WHLS[@]} == 0)); then
  echo "gpu_run.sh: no wheels in $WHEELS: run 'bash benchmarks/gpu_wheels.sh' where a package" \
    "registry is reachable, and carry the folder (.gpu_wheels) to this machine." >&2
  exit 2
fi
TARGET=${TARGET:-$(mktemp -d -t llmjax-gpu-site-XXXXXX)}
mkdir -p "$TARGET" "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

if "$PYTHON" -m pip --version >/dev/null 2>&1; then
  "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-deps --target "$TARGET" \
    --quiet --disable-pip-version-check --no-warn-script-location "${WHLS[@]}"
else  # No pip: a wheel is a zip of its files as they are installed.
  "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
    "$TARGET" "${WHLS[@]}"
fi
export PYTHONPATH="$ROOT:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

"$PYTHON" - "$TARGET" <<'EOF'
import importlib.metadata as md
import sys

import jax

devices = jax.devices()
print(f"device: {devices[0].device_kind} x {len(devices)} ({jax.default_backend()}), "
      f"jax {jax.__version__}, python {sys.version.split()[0]}")
for dist in sorted(md.distributions(path=[sys.argv[1]]), key=lambda d: d.metadata["Name"]):
  print(f"installed: {dist.metadata['Name']} {dist.version} from {sys.argv[1]}")
EOF

LIMIT=()
if command -v timeout >/dev/null; then LIMIT=(timeout "${GPU_SUITE_TIMEOUT_S:-440}"); fi
status=0
"${LIMIT[@]}" "$PYTHON" -m benchmarks.gpu_suite \
  --out="$OUT_DIR/gpu_suite.json" --deadline_s="${GPU_SUITE_DEADLINE_S:-300}" "${SUITE[@]}" \
  >"$OUT_DIR/gpu_suite.stdout" 2>"$OUT_DIR/gpu_suite.log" || status=$?
tail -n 30 "$OUT_DIR/gpu_suite.log" >&2
cat "$OUT_DIR/gpu_suite.stdout"
rm -f "$OUT_DIR/gpu_suite.stdout"
if ((status == 124)); then
  echo "gpu_run.sh: the suite ran past ${GPU_SUITE_TIMEOUT_S:-440} s and was stopped;" \
    "$OUT_DIR/gpu_suite.json holds the parts it finished." >&2
fi
echo "gpu_run.sh: exit $status; results in $OUT_DIR/gpu_suite.json, log in $OUT_DIR/gpu_suite.log"
exit "$status"
