#!/usr/bin/env bash
# Downloads, where a package registry is reachable, the wheels benchmarks/gpu_suite.py needs and
# the GPU machine's image lacks, so they travel with the working tree (the GPU machine reaches no
# registry; benchmarks/gpu_run.sh installs them there).
#
#   bash benchmarks/gpu_wheels.sh             # into .gpu_wheels/ (ignored by git), then --check
#   bash benchmarks/gpu_wheels.sh DIR         # into DIR
#   bash benchmarks/gpu_wheels.sh --check DIR # only check that DIR fits (no registry needed)
#
# The image: Python 3.12 (manylinux x86_64) with IMAGE below and their dependencies. The wheels
# are exactly the distributions that resolving IMAGE + WANT adds to resolving IMAGE alone, at
# the versions resolved together with the image (pip's resolver, metadata only), downloaded
# without their dependencies. spaCy and its tagging pipeline (about 70 MiB of wheels) do not
# fit, so on the GPU machine the suite's notes part is skipped, with that reason in its JSON.
#
# Environment: PYTHON (default python3), GPU_WHEELS_LIMIT_MIB (default 64: what
# travels to the GPU machine in all).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
LIMIT_MIB=${GPU_WHEELS_LIMIT_MIB:-64}
IMAGE=(jax==0.11.2 jaxlib==0.11.2 flax optax orbax-checkpoint tiktoken transformers torch)
WANT=("grain>=0.2.18" "ml-collections>=1.0")
PLATFORM=(
  --python-version 3.12 --implementation cp --only-binary=:all:
  --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64
)

check() {
  local dir=$1 bytes
  if [[ ! -d $dir ]]; then
    echo "gpu_wheels.sh: no folder $dir" >&2
    exit 1
  fi
  bytes=$(du -sb "$dir" | cut -f1)
  if ((bytes > LIMIT_MIB * 1024 * 1024)); then
    echo "gpu_wheels.sh: $dir holds $((bytes / 1024 / 1024)) MiB ($bytes bytes), over the" \
      "$LIMIT_MIB MiB limit on what travels to the GPU machine; it would not arrive." >&2
    exit 1
  fi
  echo "$dir: $(find "$dir" -name '*.whl' | wc -l) wheels, $((bytes / 1024)) KiB" \
    "(limit $LIMIT_MIB MiB)"
}

if [[ ${1:-} == --check ]]; then
  check "${2:?usage: gpu_wheels.sh --check DIR}"
  exit 0
fi

DEST=${1:-$ROOT/.gpu_wheels}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# pip before 24 checks Requires-Python against the running interpreter, not --python-version:
# then a throwaway virtual environment with a current pip resolves instead.
if ! "$PYTHON" -c 'import sys; from pip import __version__ as v; sys.exit(int(v.split(".")[0]) < 24)'; then
  echo "pip of $PYTHON is older than 24: using a current pip in a temporary environment"
  "$PYTHON" -m venv "$TMP/venv"
  "$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  PYTHON=$TMP/venv/bin/python
fi

resolve() {  # resolve REPORT REQUIREMENT...: pip's resolution for the image's platform.
  local report=$1
  shift
  "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --disable-pip-version-check \
    --target "$TMP/unused" --report "$report" "${PLATFORM[@]}" "$@"
}
echo "resolving the image: ${IMAGE[*]}"
resolve "$TMP/image.json" "${IMAGE[@]}"
echo "resolving the image with: ${WANT[*]}"
resolve "$TMP/all.json" "${IMAGE[@]}" "${WANT[@]}"

"$PYTHON" - "$TMP/image.json" "$TMP/all.json" >"$TMP/missing.txt" <<'EOF'
import json, re, sys

def dists(path):
  norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
  return {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(open(path))["install"]}

image, both = dists(sys.argv[1]), dists(sys.argv[2])
for name, version in sorted(both.items()):
  if name not in image:
    print(f"{name}=={version}")
  elif image[name] != version:
    print(f"note: {name} resolves to {version} beside the new wheels, {image[name]} alone", file=sys.stderr)
EOF
if [[ ! -s $TMP/missing.txt ]]; then
  echo "gpu_wheels.sh: resolving found nothing the image lacks" >&2
  exit 1
fi
echo "the image lacks: $(tr '\n' ' ' <"$TMP/missing.txt")"

mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST/MANIFEST.txt"
mapfile -t MISSING <"$TMP/missing.txt"
"$PYTHON" -m pip download --no-deps --quiet --disable-pip-version-check -d "$DEST" \
  "${PLATFORM[@]}" "${MISSING[@]}"
{
  echo "# Wheels for benchmarks/gpu_run.sh (made by benchmarks/gpu_wheels.sh)."
  echo "# Image: Python 3.12, ${IMAGE[*]}. Wanted: ${WANT[*]}."
  cat "$TMP/missing.txt"
} >"$DEST/MANIFEST.txt"
check "$DEST"
