#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: time the batched engine and the model server there.
#
#   bench/gpu.sh [WHEELS_DIR]        (about 5-8 minutes; prints ms per image, writes nothing into the repo)
#
# WHEELS_DIR (default .wheels/, an ignored folder that travels with the tree) holds the wheels of whatever the
# GPU machine lacks (`pip download -d .wheels -r requirements.txt` on a machine with the registry); without it
# the packages come from the registry. The shipped derm ensemble of 4 runs with d4 TTA at 256 px: engine
# (bf16 autocast, channels_last) vs the naive loop on the GPU (targets: <= 2 ms per image, >= 5x naive),
# then the server on the GPU under 1, 4 and 16 concurrent clients.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-.wheels}"
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "gpu.sh: no NVIDIA GPU"; exit 2; }
PY=python3
if ! $PY -c "import lesion, torch, timm, ray" 2>/dev/null; then
  $PY -m venv /tmp/lesion-gpu-venv && PY=/tmp/lesion-gpu-venv/bin/python
  if [ -d "$WHEELS" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" -r requirements.txt -e . || exit 3
  else
    $PY -m pip install -q -r requirements.txt -e . || exit 3
  fi
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'CUDA not available to torch'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 4
echo "== engine vs naive, d4, 256 px, 256 images (bench_ensemble.py --device cuda)"
timeout 240 $PY bench/bench_ensemble.py --device cuda --n 256 --size 256 --tta d4
echo "== backends on the GPU machine (torch batched on CUDA, server on CUDA; onnx rows are CPU)"
timeout 240 $PY bench/bench_backends.py --device cuda --n 256 --threads 8 --skip-ray
