#!/usr/bin/env bash
# The GPU run is the pack's (bench/gpu/README.md): the GPU machine reaches no package registry and receives at
# most 64 MiB, so nothing is installed there from a registry. Build the pack here, then run this there:
#
#   bench/gpu/pack.sh                  # here: -> .gpu-pack/ (data, ImageNet port, pure-Python wheels, code)
#   bench/gpu.sh [OUT]                 # on the GPU machine (same as .gpu-pack/run.sh OUT; OUT default gpu-out)
#
# $GPU_PACK names another pack folder. Without a GPU this only says so; the CPU proof is `.gpu-pack/run.sh --smoke OUT`.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK="${GPU_PACK:-.gpu-pack}"
if [ ! -x "$PACK/run.sh" ]; then
  echo "gpu.sh: no pack at $PACK; build it first: bench/gpu/pack.sh $PACK (see bench/gpu/README.md)" >&2
  exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU here; on the CPU run the miniature: $PACK/run.sh --smoke OUT" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec "$PACK/run.sh" "${1:-gpu-out}"
