#!/usr/bin/env bash
# Build the GPU pack (bench/gpu/README.md): bench/gpu/pack.sh [DEST] [--data ROOT] [options of pack.py]
# DEST defaults to .gpu-pack (ignored by git). Runs with $PYTHON, else the project's .venv/bin/python, else python3.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
exec "$PY" "$REPO/bench/gpu/pack.py" "$@"
