#!/usr/bin/env bash
# The GPU run, from a pack built by bench/gpu/pack.sh (this file is copied into it as DEST/run.sh).
#
#   DEST/run.sh [--smoke] OUT
#
# Uses the machine's own python3 ($PYTHON to name another) and the pack alone: its wheels are installed with
# `pip install --no-index` into a temporary folder, its code and data are read from DEST; nothing is fetched.
# Without --smoke (a CUDA GPU, about 5-8 minutes): the seed-003 K-fold derm ensemble at 192x256, a derm U-Net at
# 384x512 and a lung U-Net at 512x512, each with its card, then the ensemble x d4 timing (engine vs naive loop);
# --smoke: the same in miniature on the CPU (a few images, one epoch, tiny sizes; under 3 minutes).
# OUT receives at most 8 files, each under 16 MiB: results.json, run.log and models-N.tar (NAME.safetensors +
# NAME.json pairs; bench/gpu/unpack.py OUT FOLDER unpacks them for lesion.zoo.load_model).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT="${1:?usage: run.sh [--smoke] OUT}"
shift
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lesion-gpu-run.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONNOUSERSITE=1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$HERE"/wheels/*.whl
export PYTHONPATH="$WORK/site:$HERE/code"
export LESION_LITE_PORTS="$HERE/ports" LESION_CACHE="$WORK/cache" LESION_WEIGHTS_DIR="$WORK/no-shipped-weights"
rc=0
# The run's own limit (below the tool's one call of 560 s, pip and start-up included): on SIGTERM gpu_run.py writes
# what it finished (models, results.json) before it ends; -k kills it 20 s later if that hangs.
timeout -s TERM -k 20 "${LESION_GPU_RUN_S:-520}" \
  "$PY" "$HERE/code/gpu_run.py" ${SMOKE[@]+"${SMOKE[@]}"} --pack "$HERE" --work "$WORK" --out "$OUT" "$@" || rc=$?
exit "$rc"  # the trap removes WORK (unpacked data, models before bundling)
